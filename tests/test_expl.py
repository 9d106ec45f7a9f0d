"""Exploration behaviours (expl.py): Plan2Explore's ensemble and model-loss exploration."""
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf import load_config
from dreamerv2_tf.agent import Agent
from dreamerv2_tf.config import ConfigError
from dreamerv2_tf.synthetic import make_batch, make_spaces


def make_agent(behavior, *overrides, seed=0):
  config = load_config(['atari', 'debug'], ['--expl_behavior', behavior, '--precision', '32',
                                            '--seed', str(seed), *overrides])
  obs_space, act_space = make_spaces()
  return Agent(config, obs_space, act_space), make_batch(obs_space, act_space)


@pytest.mark.parametrize('behavior', ['plan2explore', 'model_loss'])
def test_behaviour_trains_in_the_step_and_explore_mode_acts_with_its_actor(behavior):
  agent, batch = make_agent(behavior)
  metrics = agent.train(batch)
  for key in ('expl_expl_loss', 'expl_actor_loss', 'expl_critic_loss', 'actor_loss'):
    assert np.isfinite(metrics[key]), key
  # Task actor: always action 0; exploration actor: always action 3 (biases of the last layer).
  for actor, index in ((agent.ac.actor, 0), (agent.expl.ac.actor, 3)):
    bias = actor.head.out.bias
    bias.assign(tf.one_hot(index, bias.shape[0]) * 100.0)
  obs = {k: v[:, 0] for k, v in batch.items() if k != 'action'}
  for mode, index in (('train', 0), ('eval', 0), ('explore', 3)):
    out, _ = agent.policy(obs, None, mode)
    assert (out['action'].argmax(-1) == index).all(), mode


def test_ensemble_loss_falls_and_disagreement_is_higher_off_the_data():
  agent, batch = make_agent('plan2explore', '--expl_opt.lr', '3e-3')
  losses = [agent.train(batch)['expl_expl_loss'] for _ in range(40)]
  # The loss is a sum of unit-Gaussian NLLs: its floor is 0.5 ln(2 pi) per member and dimension.
  floor = 0.5 * np.log(2 * np.pi) * len(agent.expl.heads) * agent.expl.target_size
  assert losses[-1] - floor < 0.6 * (losses[0] - floor), (floor, losses[::8])
  data = agent.wm.preprocess(agent._check_batch(batch))
  _, outputs, _ = agent.wm.loss(data)
  feat, action = outputs['feat'], tf.cast(data['action'], tf.float32)
  seen = agent.expl.disagreement(feat, action).numpy().mean()
  # Features unlike any the ensemble was trained on: same shape, shuffled and scaled values.
  rng = np.random.default_rng(0)
  unseen_feat = tf.constant(rng.normal(0, 3, feat.shape).astype(np.float32))
  unseen = agent.expl.disagreement(unseen_feat, action).numpy().mean()
  assert unseen > 3 * seen, (seen, unseen)


def test_ensemble_predicts_the_target_one_step_ahead():
  # disag_offset 1: inputs at t (features and the action that led into t) predict the target
  # at t + 1. A head that fits the data recovers the next step's target better than this one's.
  agent, batch = make_agent('plan2explore', '--disag_target', 'deter', '--expl_opt.lr', '3e-3',
                            '--disag_models', '2')
  for _ in range(60):
    agent.train(batch)
  data = agent.wm.preprocess(agent._check_batch(batch))
  _, outputs, _ = agent.wm.loss(data)
  inputs = tf.concat([outputs['feat'], tf.cast(data['action'], tf.float32)], -1)
  pred = agent.expl.heads[0](inputs).mode().numpy()
  deter = outputs['post']['deter'].numpy()
  err_next = np.abs(pred[:, :-1] - deter[:, 1:]).mean()
  err_same = np.abs(pred[:, :-1] - deter[:, :-1]).mean()
  assert err_next < err_same, (err_next, err_same)


def test_model_loss_head_learns_the_kl():
  agent, batch = make_agent('model_loss', '--expl_opt.lr', '3e-3')
  losses = [agent.train(batch)['expl_expl_loss'] for _ in range(30)]
  assert losses[-1] < losses[0], losses[::6]


@pytest.mark.parametrize('behavior', ['plan2explore', 'model_loss'])
def test_checkpoint_round_trip_covers_the_behaviour(tmp_path, behavior):
  agent, batch = make_agent(behavior)
  agent.train(batch)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(agent=agent), tmp_path, 1)
  manager.save()
  other, _ = make_agent(behavior, seed=1)
  for var in other.weights_:  # Whatever the checkpoint misses would stay visibly different.
    var.assign(var + tf.ones_like(var))
  tf.train.Checkpoint(agent=other).restore(manager.latest_checkpoint).assert_consumed()
  names = {id(v) for m in agent.expl.modules_ for v in m.variables}
  assert names and len(agent.weights_) == len(other.weights_)
  # The ensemble or head, its optimizer, the exploration actor-critic and its slow critic.
  expl_vars = [*agent.expl.modules_, agent.expl.ac.actor, agent.expl.ac.target_critic]
  assert all(any(v is w for w in agent.weights_) for m in expl_vars for v in m.variables)
  for a, b in zip(agent.weights_, other.weights_):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(other.expl.ac.updates.numpy()) == 1


@pytest.mark.parametrize('args,named', [
    (['--expl_behavior', 'curious'], 'curious'),
    (['--disag_target', 'pixels'], 'pixels'),
    (['--disag_models', '1'], 'disag_models'),
])
def test_bad_exploration_config_is_one_line_error(args, named):
  with pytest.raises(ConfigError) as info:
    load_config(['debug'], args)
  assert named in str(info.value) and '\n' not in str(info.value)
