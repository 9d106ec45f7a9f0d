"""The learning tests: DreamerV2 learns small tasks end to end (world model + actor in imagination).

CueEnv: each step shows a one-hot cue (2 classes) as a vector observation; the next step pays +1
if the action matches the cue that was shown, else 0. Episodes last 20 steps, so a random policy
scores about 10 and the optimal one 20. The reward of an action arrives with the *next*
observation, so the world model has to carry the cue through its recurrent state and the actor
has to learn from imagined rewards: nothing here can be solved by the critic alone.
"""
import gymnasium as gym
import numpy as np
import pandas
import pytest

import tensorflow as tf

import dreamerv2_tf
from dreamerv2_tf import agent, noise


class CueEnv(gym.Env):
  observation_space = gym.spaces.Box(0, 1, (2,), np.float32)
  action_space = gym.spaces.Discrete(2)

  def __init__(self, length=20):
    self._length = length

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._t = 0
    return self._obs(), {}

  def _obs(self):
    self._cue = int(self.np_random.integers(2))
    return np.eye(2, dtype=np.float32)[self._cue]

  def step(self, action):
    reward = self._reward(action)
    self._t += 1
    return self._obs(), reward, False, self._t >= self._length, {}

  def _reward(self, action):
    return float(int(action) == self._cue)


class ContinuousCueEnv(CueEnv):
  """CueEnv with a continuous action in [-1, 1]: the next step pays `action` times +-1 for cue
  1 / 0. Random actions score about 0, the best policy 20, at the bounds: the actor's means
  saturate and its std shrinks, where the truncated normal's edge draws used to give NaN."""

  action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

  def _reward(self, action):
    return float(np.asarray(action).reshape(-1)[0]) * (1.0 if self._cue else -1.0)


class EdgeNoise(noise.Noise):
  """Training noise with 2 % of the uniforms moved to the edges: 1 % exactly 0.0, 1 % the
  largest float32 below 1. Natural draws hit 0.0 once in 2^23 (a few times per hour of
  `dmc_*` training); this meets them thousands of times per update."""

  def uniform(self, shape):
    u = super().uniform(shape)
    u = tf.where(u < 0.01, 0.0, u)
    return tf.where(u > 0.99, 1 - 2.0 ** -24, u)


def train_on(env_cls, logdir, precision: str, steps: int, seed: int = 0, extra: tuple = ()):
  """Trains the debug preset, with the learning tests' settings (and `extra` flags), on
  `env_cls`; the metrics."""
  config = dreamerv2_tf.load_config(['debug'], [
      '--precision', precision, '--logdir', str(logdir), '--seed', str(seed), '--steps', str(steps),
      '--prefill', '500', '--eval_every', '1000', '--eval_eps', '10', '--log_every', '500',
      '--time_limit', '0', '--train_every', '5', '--dataset.length', '16', '--dataset.batch', '8',
      '--replay.minlen', '16', '--replay.maxlen', '16', '--model_opt.lr', '1e-3',
      '--actor_opt.lr', '1e-3', '--critic_opt.lr', '1e-3', '--discount', '0.9', *extra])
  dreamerv2_tf.train(env_cls(), config, eval_env=env_cls())
  return pandas.read_json(logdir / 'metrics.jsonl', lines=True)


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['32', 'bf16'])
def test_dreamer_learns_the_cue_task(tmp_path, precision):
  # bf16 is the fast CPU path (`precision: auto` on CPUs with native bfloat16): it has to
  # learn as well as float32, within the same bounds.
  metrics = train_on(CueEnv, tmp_path, precision, 6000)
  evals = metrics.dropna(subset=['eval_return'])
  first, last = evals['eval_return'].iloc[0], evals['eval_return'].iloc[-2:].mean()
  # Chance is 10 with a standard deviation of about 0.7 over 10 episodes; measured here the
  # agent reaches 17-18 (85-90 % correct) after 5,000 steps.
  assert first < 14, evals[['step', 'eval_return']]
  assert last >= 16.5 and last - first >= 4, evals[['step', 'eval_return']]


@pytest.mark.slow
def test_dreamer_learns_continuous_actions_through_edge_draws(tmp_path, monkeypatch):
  # Dynamics backprop through the truncated-normal actor (the `dmc_*` presets' actor), with the
  # sampler's edge draws forced: before the fix the first saturated mean met at a draw of 0
  # turned the sample, then the gradients, then every weight into NaN.
  monkeypatch.setattr(agent, 'Noise', EdgeNoise)
  # A seed can stay stuck near 0: the actor, pulled by a critic that knows nothing yet, shrinks
  # its std to the floor before the reward model has learned the cue, and the data then says
  # little about the action. Measured (float32, EdgeNoise): 3 of 14 seeds at actor lr 1e-3 and
  # 4,000 steps (and seed 0 once in CI); 1 of 16 at lr 3e-4 and 6,000 steps, which this test
  # uses, and whose stuck seed still scored 13.4 at 5,500. (A strong early entropy bonus did
  # no better. Measured with the exact gradient through samples; with TensorFlow's, the default
  # since 2026-12-07, seed 0 learned.) So up to three seeds: every one must stay finite, one
  # must learn; with independent seeds all three stay stuck about once in 4,000 runs. Broken
  # dynamics backprop or a NaN fails all three.
  tried = []
  for seed in range(3):
    metrics = train_on(ContinuousCueEnv, tmp_path / f'seed{seed}', '32', 6000, seed,
                       ('--actor_opt.lr', '3e-4'))
    # Losses are logged, finite, up to the end of the run, and no update was skipped.
    losses = metrics.dropna(subset=['model_loss'])
    assert np.isfinite(losses[['model_loss', 'actor_loss', 'critic_loss']].to_numpy()).all()
    assert losses['step'].max() >= metrics['step'].max() - 500  # The last log period.
    for key in metrics.columns[metrics.columns.str.endswith('skipped_steps')]:
      assert (metrics[key].fillna(0) == 0).all(), key
    evals = metrics.dropna(subset=['eval_return'])
    first, last = evals['eval_return'].iloc[0], evals['eval_return'].iloc[-2:].mean()
    # The first evaluation acts with the untrained mode (about 0); the mean of the last two, at
    # 4,500 and 5,500 steps, was 13.7-16.7 (of 20) in the 15 seeds that learned.
    assert abs(first) < 5, evals[['step', 'eval_return']]
    tried.append(evals[['step', 'eval_return']].assign(seed=seed))
    if last >= 10:
      # Its std reached the floor (entropy about -1.57), where edge draws used to give NaN.
      assert metrics['actor_ent'].dropna().min() < -1.4, metrics['actor_ent'].dropna()
      return
  raise AssertionError(f'no seed learned:\n{pandas.concat(tried)}')
