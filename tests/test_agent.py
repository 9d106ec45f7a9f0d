"""The agent's public API, parameter counts, fitting, precision paths and checkpoints."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf import Agent, load_config
from dreamerv2_tf.synthetic import make_batch, make_spaces


def count(module):
  return sum(int(np.prod(v.shape)) for v in module.trainable_variables)


def test_parameter_counts_match_the_paper_network():
  # Measured on the paper's code at the atari preset, 64x64x1 images and 6 actions.
  agent = Agent(load_config(['atari']), *make_spaces())
  heads = agent.wm.heads
  assert count(agent.wm.encoder) == 1_549_776
  assert count(agent.wm.rssm) == 5_657_648
  assert count(heads['decoder']) == 10_497_553
  assert count(heads['reward']) == 1_131_601
  assert count(heads['discount']) == 1_131_601
  assert sum(count(m) for m in agent.wm.modules_) == 19_968_179
  assert count(agent.ac.actor) == 1_133_606
  assert count(agent.ac.critic) == 1_131_601


def test_training_on_a_fixed_batch_fits_the_world_model():
  keras.utils.set_random_seed(0)
  config = load_config(['atari', 'debug'], ['--jit', 'true', '--model_opt.lr', '1e-3'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  batch = make_batch(obs_space, act_space)
  # Learnable structure: smooth images and rewards that depend on the action.
  batch['image'] = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :, None, None],
                             64, 3).repeat(4, 0).repeat(10, 1).transpose(0, 1, 3, 2, 4)
  batch['reward'] = batch['action'].argmax(-1).astype(np.float32) / 5
  first = agent.train(batch)
  for _ in range(60):
    last = agent.train(batch)
  assert all(np.isfinite(v) for v in last.values()), last
  # The image NLL has a floor of 0.5 ln(2 pi) per pixel; what can be fitted is the excess.
  floor = 0.5 * np.log(2 * np.pi) * 64 * 64
  excess = lambda m: m['image_loss'] - floor
  assert excess(last) < 0.2 * excess(first), (excess(first), excess(last))
  assert last['model_loss'] < first['model_loss'] - 0.8 * excess(first)
  reward_excess = lambda m: m['reward_loss'] - 0.5 * np.log(2 * np.pi)
  assert reward_excess(last) < 0.5 * reward_excess(first), (first, last)
  assert int(agent.ac.updates.numpy()) == 61


def test_policy_modes_and_state():
  config = load_config(['atari', 'debug'], ['--jit', 'true'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  batch = make_batch(obs_space, act_space, batch=3)
  obs = {k: v[:, 0] for k, v in batch.items() if k != 'action'}
  for mode in ('train', 'explore', 'eval'):
    out, state = agent.policy(obs, None, mode)
    assert out['action'].shape == (3, 6)
    np.testing.assert_allclose(out['action'].sum(-1), 1.0)  # One-hot.
    latent, action = state
    np.testing.assert_allclose(action.numpy(), out['action'])
  # Eval is deterministic given the state when eval_state_mean is on.
  config = config.update({'eval_state_mean': True})
  agent = Agent(config, obs_space, act_space)
  a1 = agent.policy(obs, None, 'eval')[0]['action']
  a2 = agent.policy(obs, None, 'eval')[0]['action']
  np.testing.assert_array_equal(a1, a2)
  with pytest.raises(ValueError, match="policy mode 'greedy'"):
    agent.policy(obs, None, 'greedy')


def test_is_first_resets_the_state():
  config = load_config(['atari', 'debug'], ['--eval_state_mean', 'true'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  obs = {k: v[:, 0] for k, v in make_batch(obs_space, act_space, batch=2).items()}
  obs['is_first'][:] = True
  _, fresh = agent.policy(obs, None, 'eval')
  _, stepped = agent.policy({**obs, 'is_first': np.zeros(2, bool)}, fresh, 'eval')
  _, reset = agent.policy(obs, stepped, 'eval')
  np.testing.assert_allclose(reset[0]['deter'], fresh[0]['deter'], atol=1e-6)
  assert np.abs(stepped[0]['deter'] - fresh[0]['deter']).max() > 1e-4


def test_bad_batch_is_a_clear_error():
  config = load_config(['atari', 'debug'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  batch = make_batch(obs_space, act_space)
  with pytest.raises(ValueError, match="batch lacks key 'action'"):
    agent.train({k: v for k, v in batch.items() if k != 'action'})
  with pytest.raises(ValueError, match=r"batch\['image'\] has shape \(4, 10, 32, 32, 1\)"):
    agent.train({**batch, 'image': batch['image'][:, :, :32, :32]})


def test_continuous_actions_and_vector_observations():
  config = load_config(['dmc_proprio', 'debug'], ['--jit', 'true'])
  obs_space, act_space = make_spaces(image=None, vector=5, actions=2, continuous=True)
  agent = Agent(config, obs_space, act_space)
  assert agent.ac.grad == 'dynamics'
  assert agent.wm.encoder.mlp_keys == ['vector'] and not agent.wm.encoder.cnn_keys
  batch = make_batch(obs_space, act_space)
  metrics = agent.train(batch)
  assert 'vector_loss' in metrics and 'discount_loss' not in metrics  # pred_discount: false.
  assert all(np.isfinite(v) for v in metrics.values())
  out, _ = agent.policy({k: v[:, 0] for k, v in batch.items()})
  assert out['action'].shape == (4, 2) and np.abs(out['action']).max() <= 1


@pytest.mark.parametrize('prec', ['bf16', '16'])
def test_mixed_precision_train_step_is_finite(prec):
  config = load_config(['atari', 'debug'], ['--precision', prec, '--jit', 'true'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  assert agent.wm.encoder.convs[0].compute_dtype == {'bf16': 'bfloat16', '16': 'float16'}[prec]
  assert all(v.dtype == tf.float32 for v in agent.wm.trainable_variables_)
  batch = make_batch(obs_space, act_space)
  before = agent.wm.encoder.convs[0].kernel.numpy().copy()
  for _ in range(3):
    metrics = agent.train(batch)
  losses = {k: v for k, v in metrics.items() if k.endswith('_loss')}
  assert all(np.isfinite(v) for v in losses.values()), metrics
  assert metrics['post_ent'] > 0 and np.isfinite(metrics['model_kl'])
  # Under float16 the first steps may overflow at the initial loss scale and be skipped; within
  # three steps the scale has come down far enough for updates to happen.
  assert np.abs(agent.wm.encoder.convs[0].kernel.numpy() - before).max() > 0
  assert ('model_loss_scale' in metrics) == (prec == '16')


def test_loss_scaling_skips_non_finite_steps():
  from dreamerv2_tf.optim import Optimizer
  import keras
  layer = keras.layers.Dense(3, dtype='mixed_float16')
  layer.build((None, 4))
  opt = Optimizer('tiny', lr=0.1, clip=100, wd=0.0, loss_scale=True,
                  variables=layer.trainable_variables)
  step = tf.function(lambda x: _step(opt, layer, x))
  before = layer.kernel.numpy().copy()
  scale = float(opt.scale.numpy())
  step(tf.constant([[1e9, 0, 0, 0]], tf.float32))  # Overflows float16: skipped.
  np.testing.assert_array_equal(layer.kernel.numpy(), before)
  assert float(opt.scale.numpy()) == scale / 2
  step(tf.ones((2, 4)))  # A finite step updates the weights.
  assert np.abs(layer.kernel.numpy() - before).max() > 0
  assert int(opt.good_steps.numpy()) == 1


def _step(opt, layer, x):
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.cast(layer(x), tf.float32) ** 2)
  return opt(tape, loss)


def test_checkpoint_round_trip_restores_the_policy(tmp_path):
  config = load_config(['atari', 'debug'], ['--eval_state_mean', 'true'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  batch = make_batch(obs_space, act_space)
  agent.train(batch)
  obs = {k: v[:, 0] for k, v in batch.items()}
  want, _ = agent.policy(obs, None, 'eval')
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(agent=agent), tmp_path, 1)
  manager.save()
  other = Agent(config.update({'seed': 1}), obs_space, act_space)
  for var in other.weights_:  # Whatever the checkpoint misses would stay visibly different.
    var.assign(var + tf.ones_like(var))
  tf.train.Checkpoint(agent=other).restore(manager.latest_checkpoint).assert_consumed()
  got, _ = other.policy(obs, None, 'eval')
  np.testing.assert_array_equal(got['action'], want['action'])
  # Every weight, optimizer slot and counter, the slow critic included (its variables have no
  # optimizer to reach them; before they were tracked, a resume reset them).
  assert len(agent.weights_) == len(other.weights_) > 50
  for a, b in zip(agent.weights_, other.weights_):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(other.ac.updates.numpy()) == 1


def test_gaussian_latents_ablation_trains():
  config = load_config(['atari', 'debug'], ['--rssm.discrete', '0', '--rssm.stoch', '6'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  assert agent.wm.rssm.feat_size == config.rssm.deter + 6
  batch = make_batch(obs_space, act_space)
  metrics = agent.train(batch)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  post, prior = agent.wm.rssm.observe(
      agent.wm.encoder(agent.wm.preprocess(batch)), batch['action'], batch['is_first'])
  assert post['stoch'].shape == (4, 10, 6) and 'mean' in post and 'logits' not in post
  assert float(tf.reduce_min(post['std'])) >= config.rssm.min_std


def test_random_exploration_is_uniform_in_explore_mode_only():
  config = load_config(['atari', 'debug'], ['--expl_behavior', 'random', '--jit', 'true'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  obs = {k: v[:, 0] for k, v in make_batch(obs_space, act_space, batch=600).items()}
  counts = agent.policy(obs, None, 'explore')[0]['action'].sum(0)
  assert counts.sum() == 600 and counts.min() > 60  # About 100 each of 6 actions.
  eval_actions = agent.policy(obs, None, 'eval')[0]['action']
  np.testing.assert_allclose(eval_actions.sum(-1), 1.0)


def test_bfloat16_losses_match_float32_on_a_fixed_batch(tmp_path):
  # The fast CPU path (mixed_bfloat16: bf16 compute, float32 weights, likelihoods and KL) must
  # compute the same world-model losses as float32 from the same weights, within 2 % (bf16 has
  # 8 mantissa bits; measured: 0.03 % on the likelihoods, 0.3 % on the KL).
  from dreamerv2_tf.noise import Noise
  config = load_config(['debug'], ['--rssm.discrete', '0'])  # Gaussian: no argmax flips.
  obs_space, act_space = make_spaces(image=(64, 64, 1), vector=3)
  batch = make_batch(obs_space, act_space, batch=4, length=10, seed=5)
  agents = {p: Agent(config.update({'precision': p}), obs_space, act_space) for p in ('32', 'bf16')}
  path = tf.train.Checkpoint(agent=agents['32']).write(str(tmp_path / 'ckpt'))
  tf.train.Checkpoint(agent=agents['bf16']).read(path).assert_existing_objects_matched()
  losses = {}
  for prec, agent in agents.items():
    data = agent.wm.preprocess({k: tf.constant(v) for k, v in batch.items()})
    _, _, metrics = agent.wm.loss(data, Noise(0, tf.constant(0)))
    losses[prec] = {k: float(v) for k, v in metrics.items()}
  for key in ('image_loss', 'vector_loss', 'reward_loss', 'discount_loss', 'model_kl'):
    a, b = losses['32'][key], losses['bf16'][key]
    assert abs(a - b) <= 0.02 * abs(a) + 1e-3, (key, a, b)
