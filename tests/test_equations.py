"""The paper's equations against hand-written numpy references, index shifts included."""
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import Agent
from dreamerv2_tf.returns import StreamNorm, discount_weights, lambda_return
from dreamerv2_tf.synthetic import make_batch, make_spaces


def np_lambda_return(reward, value, disc, bootstrap, lam):
  """V_t = r_t + d_t ((1 - lam) v_{t+1} + lam V_{t+1}), V_T = bootstrap, written as a loop."""
  T = len(reward)
  out = np.zeros_like(reward)
  nxt = bootstrap
  for t in reversed(range(T)):
    v_next = value[t + 1] if t + 1 < T else bootstrap
    out[t] = reward[t] + disc[t] * ((1 - lam) * v_next + lam * nxt)
    nxt = out[t]
  return out


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize('lam', [0.0, 0.95, 1.0])
def test_lambda_return_matches_reference(lam):
  rng = np.random.default_rng(1)
  T, B = 6, 3
  reward, value = rng.normal(size=(T, B)), rng.normal(size=(T, B))
  disc, boot = rng.uniform(0.5, 1, size=(T, B)), rng.normal(size=B)
  got = lambda_return(*[tf.constant(x, tf.float32) for x in (reward, value, disc, boot)], lam)
  np.testing.assert_allclose(got.numpy(), np_lambda_return(reward, value, disc, boot, lam),
                             rtol=1e-5, atol=1e-5)
  if lam == 0.0:  # One-step TD: r_t + d_t v_{t+1}.
    np.testing.assert_allclose(got.numpy()[:-1], reward[:-1] + disc[:-1] * value[1:], atol=1e-5)
  if lam == 1.0:  # Discounted Monte Carlo return of the last step: r + d * bootstrap.
    np.testing.assert_allclose(got.numpy()[-1], reward[-1] + disc[-1] * boot, atol=1e-5)


def test_discount_weights_shift_by_one():
  disc = np.array([[0.9], [0.0], [0.5], [0.7]], np.float32)
  got = discount_weights(tf.constant(disc)).numpy()[:, 0]
  # The state after a terminal (index 1) still counts; the one after it does not.
  np.testing.assert_allclose(got, [1.0, 0.9, 0.0, 0.0])


def test_stream_norm_divides_by_a_running_magnitude_that_is_constant_to_gradients():
  # mag <- m * mag + (1 - m) * mean|x|, then x / (mag + eps) * scale. The magnitude is a
  # statistic: as in the paper's code, the gradient sees it as a constant (with m < 1 the
  # exploration actor's dynamics gradient flowed through it; docs/parity.md, plan2explore).
  norm = StreamNorm(momentum=0.5, scale=2.0, eps=1e-8)
  x = tf.constant([[1.0, -3.0], [2.0, 0.5]])
  with tf.GradientTape() as tape:
    tape.watch(x)
    out, _ = norm(x)
  mag = 0.5 * 1.0 + 0.5 * np.abs(x.numpy()).mean()
  np.testing.assert_allclose(out.numpy(), x.numpy() / (mag + 1e-8) * 2, rtol=1e-6)
  np.testing.assert_allclose(tape.gradient(out, x).numpy(), np.full([2, 2], 2 / (mag + 1e-8)),
                             rtol=1e-6)
  assert float(norm.mag) == pytest.approx(mag)


@pytest.fixture(scope='module')
def agent():
  from dreamerv2_tf import load_config
  # float32: these compare against float64 numpy at 1e-4 (`auto` may pick bf16 on this CPU).
  config = load_config(['atari', 'debug'], ['--actor_ent', '0.01', '--precision', '32'])
  obs_space, act_space = make_spaces()
  return Agent(config, obs_space, act_space)


def _seq(agent, seed=0, H=5, N=7):
  """A synthetic imagined sequence with features, one-hot actions and discount weights."""
  rng = np.random.default_rng(seed)
  F = agent.wm.rssm.feat_size
  A = agent.wm.act_size
  disc = rng.uniform(0.8, 1.0, (H + 1, N)).astype(np.float32)
  seq = {
      'feat': tf.constant(rng.normal(size=(H + 1, N, F)), tf.float32),
      'action': tf.constant(np.eye(A)[rng.integers(0, A, (H + 1, N))], tf.float32),
      'reward': tf.constant(rng.normal(size=(H + 1, N)), tf.float32),
      'discount': tf.constant(disc),
      'weight': discount_weights(tf.constant(disc)),
  }
  # seq['policy'][t]: the actor's output at state t-1, which chose action t (as `imagine` saves).
  params = agent.ac.actor.params(seq['feat'][:-1])
  seq['policy'] = tf.concat([tf.zeros_like(params[:1]), params], 0)
  target = tf.constant(rng.normal(size=(H, N)), tf.float32)
  return seq, target


def _logits(actor, feat):
  return actor.head.out(actor.hidden(feat)).numpy()


def test_target_is_lambda_return_of_slow_critic(agent):
  seq, _ = _seq(agent)
  target, _ = agent.ac.target(seq)
  value = agent.ac.target_critic(seq['feat']).mode().numpy()
  want = np_lambda_return(seq['reward'].numpy()[:-1], value[:-1], seq['discount'].numpy()[:-1],
                          value[-1], agent.config.discount_lambda)
  np.testing.assert_allclose(target.numpy(), want, rtol=1e-4, atol=1e-5)


def test_reinforce_actor_loss(agent):
  seq, target = _seq(agent, 1)
  agent.ac.grad = 'reinforce'
  loss, metrics = agent.ac.actor_loss(seq, target)
  feat, action, w = seq['feat'].numpy(), seq['action'].numpy(), seq['weight'].numpy()
  logp = np_log_softmax(_logits(agent.ac.actor, feat[:-2]))
  # The policy at state t chose the action stored at t+1, credited with target t+1.
  logp_a = (logp * action[1:-1]).sum(-1)
  baseline = agent.ac.target_critic(feat[:-2]).mode().numpy()
  ent = -(np.exp(logp) * logp).sum(-1)
  objective = logp_a * (target.numpy()[1:] - baseline) + 0.01 * ent
  want = -(w[:-2] * objective).mean()
  np.testing.assert_allclose(loss.numpy(), want, rtol=1e-4)
  np.testing.assert_allclose(metrics['actor_ent_scale'], 0.01, rtol=1e-6)
  # In training the baseline reuses the slow critic's values from `target` (seq['value']).
  agent.ac.target(seq)
  assert seq['value'].shape == seq['reward'].shape
  reused, _ = agent.ac.actor_loss(seq, target)
  np.testing.assert_allclose(reused.numpy(), want, rtol=1e-4)


def test_reinforce_gradient_treats_advantage_as_constant(agent):
  seq, target = _seq(agent, 2)
  agent.ac.grad = 'reinforce'
  with tf.GradientTape() as tape:
    tape.watch(target)
    loss, _ = agent.ac.actor_loss(seq, target)
  assert tape.gradient(loss, target) is None  # sg(V - v): no gradient into the returns.


def test_dynamics_actor_loss(agent):
  seq, target = _seq(agent, 3)
  agent.ac.grad = 'dynamics'
  with tf.GradientTape() as tape:
    tape.watch(target)
    loss, _ = agent.ac.actor_loss(seq, target)
  grad = tape.gradient(loss, target).numpy()
  feat, w = seq['feat'].numpy(), seq['weight'].numpy()
  logp = np_log_softmax(_logits(agent.ac.actor, feat[:-2]))
  ent = -(np.exp(logp) * logp).sum(-1)
  want = -(w[:-2] * (target.numpy()[1:] + 0.01 * ent)).mean()
  np.testing.assert_allclose(loss.numpy(), want, rtol=1e-4)
  # The returns are maximised directly: d loss / d t_{t+1} = -w_t / N, none to t_0.
  H, N = w.shape[0] - 1, w.shape[1]
  np.testing.assert_allclose(grad[0], 0.0)
  np.testing.assert_allclose(grad[1:], -w[:-2] / ((H - 1) * N), rtol=1e-5)


def test_both_mixes_the_two_objectives(agent):
  seq, target = _seq(agent, 4)
  losses = {}
  for grad in ('reinforce', 'dynamics', 'both'):
    agent.ac.grad = grad
    losses[grad] = agent.ac.actor_loss(seq, target)[0].numpy()
  agent.ac.grad = 'reinforce'
  mix = float(agent.config.actor_grad_mix)
  np.testing.assert_allclose(
      losses['both'], mix * losses['dynamics'] + (1 - mix) * losses['reinforce'], rtol=1e-4)


def test_critic_loss(agent):
  seq, target = _seq(agent, 5)
  loss, _ = agent.ac.critic_loss(seq, target)
  v = agent.ac.critic(seq['feat'][:-1]).mode().numpy()
  w = seq['weight'].numpy()
  logp = -0.5 * (target.numpy() - v) ** 2 - 0.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(loss.numpy(), -(logp * w[:-1]).mean(), rtol=1e-5)


def test_slow_target_update():
  from dreamerv2_tf import load_config
  config = load_config(['atari', 'debug'], ['--slow_target_update', '3',
                                            '--slow_target_fraction', '0.5'])
  agent = Agent(config, *make_spaces())
  ac = agent.ac
  get = lambda net: [v.numpy().copy() for v in net.variables]
  np.testing.assert_allclose(get(ac.critic)[0], get(ac.target_critic)[0])  # Copied at start.
  for step in range(7):
    critic = get(ac.critic)
    before = get(ac.target_critic)
    for v in ac.critic.variables:  # Pretend the critic learned something.
      v.assign(v + 1.0)
    critic = get(ac.critic)
    ac.update_slow_target()
    after = get(ac.target_critic)
    for c, b, a in zip(critic, before, after):
      if step == 0:
        np.testing.assert_allclose(a, c, rtol=1e-6)  # First update copies fully.
      elif step % 3 == 0:
        np.testing.assert_allclose(a, 0.5 * c + 0.5 * b, rtol=1e-6)
      else:
        np.testing.assert_allclose(a, b)
  assert int(ac.updates.numpy()) == 7


def test_imagine_replaces_first_discount_and_weights(agent):
  obs_space, act_space = make_spaces()
  batch = make_batch(obs_space, act_space, batch=2, length=3)
  data = agent.wm.preprocess(batch)
  embed = agent.wm.encoder(data)
  post, _ = agent.wm.rssm.observe(embed, data['action'], data['is_first'])
  is_terminal = np.zeros((2, 3), bool)
  is_terminal[1, 2] = True
  seq = agent.wm.imagine(agent.ac.actor, post, tf.constant(is_terminal), 4)
  H1, N = 5, 6
  assert seq['feat'].shape[:2] == (H1, N)
  assert seq['action'].shape == (H1, N, 6)
  np.testing.assert_allclose(seq['action'][0], 0.0)
  # The saved actor outputs: entry t+1 is the actor at state t (the one that chose action t+1).
  np.testing.assert_allclose(seq['policy'][1:], _logits(agent.ac.actor, seq['feat'][:-1]),
                             rtol=1e-5, atol=1e-6)
  gamma = agent.config.discount
  want_first = np.where(is_terminal.reshape(-1), 0.0, gamma)
  np.testing.assert_allclose(seq['discount'][0], want_first, rtol=1e-6)
  pred = agent.wm.heads['discount'](seq['feat'][1:]).mean().numpy()
  np.testing.assert_allclose(seq['discount'][1:], pred, rtol=1e-5)
  disc = seq['discount'].numpy()
  want_w = np.concatenate([np.ones((1, N)), np.cumprod(disc[:-1], 0)], 0)
  np.testing.assert_allclose(seq['weight'], want_w, rtol=1e-5)
  # Start states are the posteriors, flattened batch-major.
  np.testing.assert_allclose(seq['deter'][0], tf.reshape(post['deter'], [N, -1]), rtol=1e-6)


def test_world_model_loss_terms(agent):
  """model loss = sum of scaled terms; image NLL is the unit-Normal log-likelihood."""
  obs_space, act_space = make_spaces()
  batch = make_batch(obs_space, act_space, batch=2, length=4)
  data = agent.wm.preprocess(batch)
  loss, out, metrics = agent.wm.loss(data)
  scales = agent.config.loss_scales
  want = (metrics['image_loss'] + metrics['reward_loss'] + scales.discount *
          metrics['discount_loss'] + scales.kl * metrics['kl_loss'])
  np.testing.assert_allclose(loss.numpy(), want.numpy(), rtol=1e-5)
  mean = agent.wm.heads['decoder'](out['feat'])['image'].mean().numpy()
  x = batch['image'] / 255.0 - 0.5
  nll = (0.5 * (x - mean) ** 2 + 0.5 * np.log(2 * np.pi)).sum((-3, -2, -1)).mean()
  np.testing.assert_allclose(metrics['image_loss'].numpy(), nll, rtol=1e-4)
  # Discount targets: 0 at terminals, else gamma; rewards tanh-clipped.
  np.testing.assert_allclose(data['discount'][0, -1], 0.0)
  np.testing.assert_allclose(data['discount'][1, -1], agent.config.discount, rtol=1e-6)
  np.testing.assert_allclose(data['reward'], np.tanh(batch['reward']), rtol=1e-6)
