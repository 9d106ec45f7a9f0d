"""Environment wrappers: the observation contract and the paper's Atari protocol, checked against
the raw libraries. Light on CPU: no TensorFlow, few rendered frames, tiny episodes."""
import functools
import json
import os

import cv2
import gymnasium as gym
import numpy as np
import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.envs import (ATARI_GAMES, BatchEnv, from_env, make_batch_env, make_env,
                               task_name)
from dreamerv2_tf.envs.atari import Atari, atari_env_id
from dreamerv2_tf.envs.base import Env
from dreamerv2_tf.envs.dmc import DMC

SCORES = '/work/shared/scores/atari-dreamerv2.json'


def raw_atari(game, seed, obs_type='grayscale'):
  import ale_py
  gym.register_envs(ale_py)
  env = gym.make(atari_env_id(game), frameskip=1, repeat_action_probability=0.0,
                 obs_type=obs_type, max_num_frames_per_episode=0)
  frame, _ = env.reset(seed=seed)
  return env, frame


def area(frame):
  out = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
  return out if out.ndim == 3 else out[..., None]


def assert_one_line_error(error_info, *words):
  text = str(error_info.value)
  assert '\n' not in text
  for word in words:
    assert word in text, text


def run_until_last(env, action, limit=10000):
  for count in range(1, limit + 1):
    obs = env.step({'action': action})
    if obs['is_last']:
      return count, obs
  raise AssertionError('episode did not end')


# Atari ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('grayscale', [True, False])
def test_atari_frames_and_rewards_match_raw_ale(grayscale):
  env = Atari('pong', sticky=0.0, noops=0, grayscale=grayscale, seed=5)
  raw, frame = raw_atari('pong', 5, 'grayscale' if grayscale else 'rgb')
  obs = env.reset()
  assert obs['image'].shape == (64, 64, 1 if grayscale else 3) and obs['image'].dtype == np.uint8
  assert obs['is_first'] and not obs['is_last'] and obs['reward'] == 0
  np.testing.assert_array_equal(obs['image'], area(frame))
  rng, rewards = np.random.default_rng(0), []
  for _ in range(250 if grayscale else 20):
    action = int(rng.integers(6))
    obs = env.step({'action': np.eye(6, dtype=np.float32)[action]})  # one-hot, as the agent sends
    frames, reward = [], 0.0
    for _ in range(4):
      frame, step_reward, *_ = raw.step(action)
      frames.append(frame)
      reward += step_reward
    np.testing.assert_array_equal(obs['image'], area(np.maximum(frames[2], frames[3])))
    assert obs['reward'] == reward and obs['reward'].dtype == np.float32
    assert not obs['is_first']
    rewards.append(reward)
  if grayscale:
    assert any(rewards), 'no point scored; the reward comparison checked nothing'


def test_atari_noops_at_reset_and_sticky_actions_on_the_ale():
  env = Atari('breakout', seed=1)
  assert env.ale.getFloat('repeat_action_probability') == pytest.approx(0.25)
  counts = []
  for _ in range(12):
    env.reset()
    counts.append(env.ale.getEpisodeFrameNumber())  # one frame per no-op
  assert all(0 <= count <= 30 for count in counts) and len(set(counts)) > 3, counts
  quiet = Atari('breakout', noops=0, sticky=0.0, seed=1)
  quiet.reset()
  assert quiet.ale.getEpisodeFrameNumber() == 0
  assert quiet.ale.getFloat('repeat_action_probability') == 0.0


def test_atari_life_loss_does_not_end_episode_unless_asked():
  env = Atari('breakout', noops=0, sticky=0.0, seed=0)  # FIRE only: the ball is soon lost
  env.reset()
  for _ in range(200):
    obs = env.step({'action': 1})
    if env.ale.lives() < 5:
      break
  assert env.ale.lives() == 4 and not obs['is_last'] and not obs['is_terminal']
  env = Atari('breakout', noops=0, sticky=0.0, seed=0, lives='reset')
  env.reset()
  _, obs = run_until_last(env, 1, 200)
  assert obs['is_terminal'] and env.ale.lives() == 4
  obs = env.reset()  # continues the game after a lost life
  assert obs['is_first'] and env.ale.lives() == 4 and env.ale.getEpisodeFrameNumber() > 0


def test_atari_time_limit_truncates_and_blocks_further_steps():
  env = Atari('pong', time_limit=3, seed=0)
  env.reset()
  count, obs = run_until_last(env, 0)
  assert count == 3 and obs['is_last'] and not obs['is_terminal']
  with pytest.raises(RuntimeError, match='reset'):
    env.step({'action': 0})
  assert env.reset()['is_first']


def test_atari_action_checks_and_unknown_game():
  env = Atari('pong', seed=0)
  with pytest.raises(RuntimeError, match='before reset'):
    env.step({'action': 0})
  env.reset()
  with pytest.raises(ValueError) as error:
    env.step({'action': np.ones(5)})
  assert_one_line_error(error, 'length 6', '(5,)')
  with pytest.raises(ValueError) as error:
    env.step(3)
  assert_one_line_error(error, "'action'")
  with pytest.raises(ValueError) as error:
    make_env('atari_pongg')
  assert_one_line_error(error, 'pongg', 'did you mean pong', '55 games', 'zaxxon')


def test_pong_names_and_config_flow():
  assert task_name('pong') == task_name('atari_pong') == 'atari_pong'
  assert task_name('walker_walk') == 'dmc_walker_walk' and task_name('jamesbond') == (
      'atari_james_bond')
  config = load_config(['atari', 'debug'])
  for name in ('pong', 'atari_pong'):
    env = make_env(name, config, seed=0)
    assert env.act_space['action'].n == 6 and env.obs_space['image'].shape == (64, 64, 1)
    assert env._time_limit == 100 and env._repeat == 4  # from the debug and atari presets
  rgb = make_env('pong', config, atari_grayscale=False, render_size=(32, 48))
  assert rgb.reset()['image'].shape == (32, 48, 3)
  assert make_env('pong')._time_limit == 27000  # no config: the paper's defaults
  with pytest.raises(ValueError) as error:
    make_env('pong', frame_skip=4)
  assert_one_line_error(error, 'frame_skip', 'action_repeat')
  with pytest.raises(ValueError) as error:
    make_env('chess')
  assert_one_line_error(error, "'chess'", 'gym:')


def test_all_paper_games_map_to_registered_ale_ids():
  import ale_py
  gym.register_envs(ale_py)
  assert len(ATARI_GAMES) == len(set(ATARI_GAMES)) == 55
  missing = [game for game in ATARI_GAMES if atari_env_id(game) not in gym.registry]
  assert not missing
  if os.path.exists(SCORES):
    with open(SCORES) as file:
      tasks = {run['task'] for run in json.load(file)}
    assert tasks == {f'atari_{game}' for game in ATARI_GAMES}


def test_atari_fast_batch_matches_single_env():
  fast = make_batch_env('pong', 2, seed=3, fast=True, atari_sticky=0.0, atari_noops=0,
                        time_limit=40)
  slow = [Atari('pong', sticky=0.0, noops=0, seed=s, time_limit=40) for s in (3, 4)]
  obs = fast.reset()
  single = [env.reset() for env in slow]
  rng, flags = np.random.default_rng(0), []
  for step in range(43):
    # Known difference: the C++ stops capturing frames when an episode ends (see atari_vector).
    same = ~obs['is_last']
    np.testing.assert_array_equal(obs['image'][same], np.stack([o['image'] for o in single])[same])
    for key in ('reward', 'is_first', 'is_last', 'is_terminal'):
      np.testing.assert_array_equal(obs[key], [o[key] for o in single], err_msg=f'{key} {step}')
    flags.append((obs['is_first'].tolist(), obs['is_last'].tolist(), obs['is_terminal'].any()))
    actions = rng.integers(6, size=2)
    obs = fast.step({'action': np.eye(6)[actions]})
    single = [env.reset() if o['is_last'] else env.step({'action': a})
              for env, o, a in zip(slow, single, actions)]
  fast.close()
  # The 40th step is cut off by the time limit (not terminal); the next one is a reset.
  assert flags[40] == ([False, False], [True, True], False)
  assert flags[41][0] == [True, True] and flags[0][0] == [True, True]


# DeepMind Control -------------------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore:.*Casting input x')  # np scalars in contains()
def test_dmc_walker_images_vectors_and_episode_end():
  # Rendering runs in a spawned worker: MuJoCo's EGL context and TensorFlow (imported by other
  # test modules) cannot share a process.
  env = BatchEnv([functools.partial(make_env, 'dmc_walker_walk', seed=0)], parallel=True)
  try:
    space = env.act_space['action']
    assert space.shape == (6,) and space.low.min() == -1 and space.high.max() == 1
    obs = env.reset()
    for _ in range(3):
      obs = env.step({'action': np.full((1, 6), 1.5, np.float32)})  # clipped into [-1, 1]
    obs = {k: v[0] for k, v in obs.items()}
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert obs['image'].std() > 0
    for key in ('orientations', 'height', 'velocity'):
      assert obs[key].dtype == np.float32 and obs[key].ndim == 1
    assert obs['orientations'].shape == (14,) and obs['height'].shape == (1,)
    assert obs['reward'].dtype == np.float32 and env.obs_space.contains(obs)
  finally:
    env.close()
  # No rendering, so 500 steps stay cheap; still in a worker, as MuJoCo and TensorFlow in one
  # process crash at exit.
  blind = BatchEnv([functools.partial(DMC, 'walker_walk', image=False, seed=0)], parallel=True)
  try:
    assert 'image' not in blind.reset()
    count, obs = run_until_last(blind, np.zeros((1, 6), np.float32))
    assert count == 500 and obs['is_last'][0] and not obs['is_terminal'][0]  # 1000 / repeat 2
  finally:
    blind.close()


# Gymnasium --------------------------------------------------------------------------------------

class ImageEnv(gym.Env):
  """A tiny env with image observations and a chosen observation space."""

  def __init__(self, space=None):
    self.observation_space = space or gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)
    self.action_space = gym.spaces.Discrete(3)

  def _frame(self):
    frame = np.zeros((84, 84, 3), np.uint8)
    frame[:42] = 200  # top half bright: survives resizing in a known way
    return frame

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    return self._frame(), {}

  def step(self, action):
    return self._frame(), float(action), action == 2, False, {}


def test_gym_cartpole_vector_discrete_and_termination():
  env = make_env('gym:CartPole-v1', seed=0)
  assert env.act_space['action'].n == 2 and env.obs_space['vector'].shape == (4,)
  obs = env.reset()
  assert obs['vector'].dtype == np.float32 and obs['is_first']
  count, obs = run_until_last(env, np.array([1.0, 0.0]))  # always push left: the pole falls
  assert count < 50 and obs['is_terminal'] and obs['reward'] == 1.0
  truncated = from_env(gym.make('CartPole-v1', max_episode_steps=3), seed=0)
  truncated.reset()
  count, obs = run_until_last(truncated, 0)
  assert count == 3 and not obs['is_terminal']  # gymnasium's truncated -> is_last only
  limited = make_env('gym:CartPole-v1', seed=0, time_limit=2, action_repeat=2)
  limited.reset()
  count, obs = run_until_last(limited, 0)
  assert count == 2 and obs['reward'] == 2.0 and not obs['is_terminal']


def test_gym_pendulum_box_actions_are_rescaled():
  received = []

  class Spy(gym.Wrapper):
    def step(self, action):
      received.append(np.array(action))
      return self.env.step(action)

  env = from_env(Spy(gym.make('Pendulum-v1')), seed=0)
  assert env.act_space['action'] == gym.spaces.Box(-1, 1, (1,), np.float32)
  env.reset()
  for action in ([-1.0], [1.0], [0.5], [3.0]):
    env.step({'action': action})
  np.testing.assert_allclose(np.concatenate(received), [-2.0, 2.0, 1.0, 2.0])
  with pytest.raises(ValueError) as error:
    env.step({'action': [0.0, 0.0]})
  assert_one_line_error(error, '(1,)', '(2,)')


def test_gym_images_are_resized_and_bad_spaces_rejected():
  env = from_env(ImageEnv())
  obs = env.reset()
  assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
  assert (obs['image'][:30] == 200).all() and (obs['image'][34:] == 0).all()
  obs = env.step({'action': np.eye(3)[2]})
  assert obs['reward'] == 2.0 and obs['is_terminal'] and obs['is_last']
  if 'DreamerTest/Image-v0' not in gym.registry:  # a third-party id, made by its name
    gym.register('DreamerTest/Image-v0', entry_point=ImageEnv)
  assert make_env('gym:DreamerTest/Image-v0').obs_space['image'].shape == (64, 64, 3)
  gray = from_env(ImageEnv(gym.spaces.Box(0, 255, (84, 84), np.uint8)))
  assert gray.obs_space['image'].shape == (64, 64, 1)
  tuple_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
  with pytest.raises(ValueError) as error:
    from_env(ImageEnv(tuple_space))
  assert_one_line_error(error, 'unsupported observation space', 'Tuple')
  bad_action = ImageEnv()
  bad_action.action_space = gym.spaces.MultiDiscrete([2, 2])
  with pytest.raises(ValueError) as error:
    from_env(bad_action)
  assert_one_line_error(error, 'unsupported action space', 'MultiDiscrete')


# Crafter ----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore:.*Casting input x')  # np scalars in contains()
def test_crafter_logs_achievements():
  pytest.importorskip('crafter')
  env = make_env('crafter_noreward', seed=0)
  obs = env.reset()
  assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
  assert 'log_achievement_collect_wood' in obs and 'log_reward' in obs
  assert env.act_space['action'].n == 17
  for _ in range(5):
    obs = env.step({'action': np.eye(17)[5]})
    assert obs['reward'] == 0.0  # noreward variant
  assert len([key for key in obs if key.startswith('log_achievement_')]) == 22
  assert env.obs_space.contains(obs)


# Batches ----------------------------------------------------------------------------------------

class Countdown(Env):
  """A contract env whose episodes last `length` steps; the image counts the steps."""

  def __init__(self, length):
    super().__init__()
    self._length, self._t = length, 0
    self.obs_space = gym.spaces.Dict({'count': gym.spaces.Box(0, 99, (1,), np.float32)})
    self.act_space = gym.spaces.Dict({'action': gym.spaces.Discrete(2)})

  def _reset(self):
    self._t = 0
    return self._obs({'count': np.zeros(1, np.float32)}, is_first=True)

  def _step(self, action):
    self._t += 1
    return self._obs({'count': np.full(1, self._t, np.float32)}, 1.0 + action,
                     is_terminal=self._t == self._length)


def test_batch_env_auto_resets_and_stacks():
  batch = BatchEnv([Countdown(2), Countdown(3)])
  assert len(batch) == batch.num_envs == 2
  obs = batch.reset()
  assert obs['count'].shape == (2, 1) and obs['is_first'].tolist() == [True, True]
  firsts, lasts, counts, rewards = [], [], [], []
  for _ in range(6):
    obs = batch.step({'action': np.eye(2)[[1, 0]]})
    firsts.append(obs['is_first'].tolist())
    lasts.append(obs['is_last'].tolist())
    counts.append(obs['count'][:, 0].tolist())
    rewards.append(obs['reward'].tolist())
  assert counts == [[1, 1], [2, 2], [0, 3], [1, 0], [2, 1], [0, 2]]
  assert lasts == [[False, False], [True, False], [False, True], [False, False],
                   [True, False], [False, False]]
  assert firsts == [[False, False], [False, False], [True, False], [False, True],
                    [False, False], [True, False]]
  assert rewards[2] == [0.0, 1.0] and rewards[3] == [2.0, 0.0]  # reset steps give reward 0
  with pytest.raises(ValueError) as error:
    batch.step({'action': np.eye(2)[[1, 0, 0]]})
  assert_one_line_error(error, '(2, 2)', '(3, 2)')


def test_batch_env_parallel_matches_in_process():
  ctors = [functools.partial(make_env, 'gym:CartPole-v1', seed=seed) for seed in (0, 1)]
  local, remote = BatchEnv(ctors), BatchEnv(ctors, parallel=True)
  try:
    a, b = local.reset(), remote.reset()
    resets = 0
    for step in range(40):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} at step {step}')
      resets += int(b['is_first'][1]) if step else 0
      action = {'action': np.eye(2)[[step % 2, 0]]}  # env 1 always pushes left: short episodes
      a, b = local.step(action), remote.step(action)
    assert resets >= 2
    with pytest.raises(ValueError, match='parallel=True needs'):
      BatchEnv([make_env('gym:CartPole-v1')], parallel=True)
  finally:
    remote.close()
    local.close()
  assert not any(worker._process.is_alive() for worker in remote._envs)


def test_dmc_rendering_in_a_tensorflow_process_is_a_clear_error():
  import tensorflow  # noqa: F401  (the training process has it loaded)
  with pytest.raises(RuntimeError, match='parallel=True'):
    make_env('dmc_walker_walk', seed=0)
