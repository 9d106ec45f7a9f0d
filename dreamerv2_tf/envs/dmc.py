"""DeepMind Control Suite tasks through dm_control, following the observation contract.

Observations are a 64x64 RGB `image` rendered from a camera plus every proprioceptive
observation flattened to its own float32 vector (e.g. `orientations`, `height`, `velocity` for
the walker). Actions in [-1, 1] are rescaled to the task's bounds and repeated (2 in the paper).
Episodes last 1000 environment steps and end with is_last but not is_terminal.
"""
from __future__ import annotations

import os
from typing import Any

import sys

import gymnasium as gym

import numpy as np

from dreamerv2_tf.envs import base

# EGL renders off-screen without a display (on CPU through Mesa); must be set before dm_control
# is first imported.
os.environ.setdefault('MUJOCO_GL', 'egl')

# Short domain names used by the paper's score files.
_DOMAIN_ALIASES = {'cup': 'ball_in_cup'}


def _check_no_tensorflow() -> None:
  """Refuses to load MuJoCo next to TensorFlow, before dm_control is imported.

  Seen with TF 2.21 and MuJoCo 3.17 on Mesa: creating the renderer's GL context in a process
  that has loaded TensorFlow (or loading TensorFlow after) is a SIGSEGV, and even without
  rendering such a process aborts at exit (free(): invalid pointer).
  """
  if 'tensorflow' in sys.modules:
    raise RuntimeError('DMC cannot run in a process that has imported TensorFlow; build the '
                       'env in a worker: BatchEnv([ctor], parallel=True)')


def dmc_tasks() -> dict[str, tuple[str, str]]:
  """Every suite task by name, e.g. {'walker_walk': ('walker', 'walk'), ...}, with aliases."""
  from dm_control import suite
  names = {f'{domain}_{task}': (domain, task) for domain, task in suite.ALL_TASKS}
  for alias, domain in _DOMAIN_ALIASES.items():
    names.update({f'{alias}_{task}': (d, task) for d, task in suite.ALL_TASKS if d == domain})
  return names


def dmc_task(name: str) -> tuple[str, str]:
  """(domain, task) for 'walker_walk' or 'dmc_walker_walk'; unknown names raise."""
  import difflib
  key = name[len('dmc_'):] if name.startswith('dmc_') else name
  tasks = dmc_tasks()
  if key not in tasks:
    close = difflib.get_close_matches(key, tasks, n=3, cutoff=0.5)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'unknown DMC task {name!r}{hint} ({len(tasks)} tasks, e.g. walker_walk, '
                     f'cheetah_run, cup_catch)')
  return tasks[key]


class DMC(base.Env):
  """A DeepMind Control Suite task.

  Args:
    name: 'walker_walk' (or 'dmc_walker_walk').
    action_repeat: environment steps per agent step (rewards are summed).
    size: (height, width) of the rendered `image`.
    camera: camera id; -1 = the task's default (2 for quadruped, else 0).
    image: render the `image` observation; False saves the rendering cost for proprio-only runs.
    time_limit: extra limit in agent steps (0 = only the suite's own 1000 environment steps).
    seed: seeds the task's random state.
  """

  def __init__(self, name: str, action_repeat: int = 2, size: tuple[int, int] = (64, 64),
               camera: int = -1, image: bool = True, time_limit: int = 0,
               seed: int | None = None):
    _check_no_tensorflow()
    super().__init__(time_limit)
    domain, task = dmc_task(name)
    self._repeat = base.check_int('action_repeat', action_repeat, 1)
    self._size = base.check_size(size)
    camera = base.check_int('camera', camera, -1)
    self._camera = (2 if domain == 'quadruped' else 0) if camera == -1 else camera
    self._render = bool(image)
    from dm_control import suite
    self._env = suite.load(domain, task, task_kwargs={'random': seed})
    spec = self._env.action_spec()
    self._low = np.asarray(spec.minimum, np.float32)
    self._high = np.asarray(spec.maximum, np.float32)
    data = {}
    if self._render:
      data['image'] = base.image_space(*self._size, 3)
    for key, value in self._env.observation_spec().items():
      data[key] = base.vector_space(int(np.prod(value.shape, dtype=int)))
    self.obs_space = base.contract_obs_space(data)
    self.act_space = gym.spaces.Dict(
        {'action': gym.spaces.Box(-1, 1, tuple(spec.shape), np.float32)})

  def _reset(self) -> dict[str, Any]:
    timestep = self._env.reset()
    return self._obs(self._data(timestep), is_first=True)

  def _step(self, action: np.ndarray) -> dict[str, Any]:
    action = base.rescale(action, self._low, self._high)
    reward = 0.0
    for _ in range(self._repeat):
      timestep = self._env.step(action)
      reward += timestep.reward or 0.0
      if timestep.last():
        break
    # The suite ends every episode by its step limit (discount 1); discount 0 is a real terminal.
    terminal = timestep.last() and timestep.discount == 0
    return self._obs(self._data(timestep), reward, is_last=timestep.last(), is_terminal=terminal)

  def _data(self, timestep: Any) -> dict[str, np.ndarray]:
    data = {key: np.asarray(value, np.float32).reshape(-1)
            for key, value in timestep.observation.items()}
    if self._render:
      data['image'] = self._env.physics.render(*self._size, camera_id=self._camera)
    return data

  def close(self) -> None:
    self._env.close()
