"""Step N contract environments together, in this process or in worker processes.

    batch = BatchEnv([lambda: make_env('gym:CartPole-v1', seed=i) for i in range(4)])
    obs = batch.reset()                       # {'vector': [4, 4], 'is_first': [4], ...}
    obs = batch.step({'action': actions})     # actions [4, ...] in the agent's format

An environment whose episode ended (is_last) on one step is reset on the next: its action is
ignored and its observation is the reset one (is_first True, reward 0). `parallel=True` runs each
environment in its own spawned process; the environments then have to be given as picklable
zero-argument constructors (e.g. `functools.partial(make_env, 'pong', seed=1)`).

For Atari, `atari_vector.AtariBatchEnv` is a faster drop-in built on ale-py's C++ vector env;
its module docstring lists what it matches of the paper's protocol.
"""
from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def _is_ctor(env: Any) -> bool:
  """A zero-argument constructor (function, partial or class) rather than an env object."""
  return callable(env) and (isinstance(env, type) or not hasattr(env, 'step'))


def stack(observations: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Stack a list of observation dicts into one dict of `[N, ...]` arrays."""
  return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}


class BatchEnv:
  """N contract environments stepped as one batch, with automatic resets.

  Args:
    envs: environments, or zero-argument callables that build them (required for parallel).
    parallel: run each environment in its own worker process.
    start_method: how workers start; 'spawn' (default) is safe when the parent runs TensorFlow
      threads but, like any spawn, needs the main script to guard its entry point with
      `if __name__ == '__main__':`; 'fork' and 'forkserver' are the alternatives.
  """

  def __init__(self, envs: Sequence[Any], parallel: bool = False, start_method: str = 'spawn'):
    if not envs:
      raise ValueError('BatchEnv needs at least one environment, got none')
    self._parallel = bool(parallel)
    if self._parallel:
      if not all(_is_ctor(env) for env in envs):
        raise ValueError('parallel=True needs zero-argument constructors of the environments, '
                         'not environment objects')
      if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(f'start_method must be one of '
                         f'{", ".join(multiprocessing.get_all_start_methods())}, got '
                         f'{start_method!r}')
      context = multiprocessing.get_context(start_method)
      self._envs = []
      try:
        for index, ctor in enumerate(envs):
          self._envs.append(_Worker(context, ctor, index))
      except BaseException:
        for worker in self._envs:  # do not leave started workers behind
          worker.close()
        raise
    else:
      self._envs = [env() if _is_ctor(env) else env for env in envs]
    self.obs_space = self._envs[0].obs_space
    self.act_space = self._envs[0].act_space
    self._needs_reset = np.ones(len(self._envs), bool)
    self._closed = False

  def __len__(self) -> int:
    return len(self._envs)

  @property
  def num_envs(self) -> int:
    """How many environments the batch steps."""
    return len(self._envs)

  def reset(self) -> dict[str, np.ndarray]:
    """Reset every environment and return the stacked first observations."""
    self._needs_reset[:] = True
    return self._run([None] * len(self._envs))

  def step(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Step every environment with its row of `action['action']` ([N, ...]); ended ones reset."""
    if not isinstance(action, Mapping) or 'action' not in action:
      raise ValueError(f"step() takes a dict {{'action': [N, ...]}}, got {type(action).__name__}")
    actions = np.asarray(action['action'])
    space = self.act_space['action']
    row = (int(space.n),) if hasattr(space, 'n') else tuple(space.shape)
    # Checked here so that a bad batch steps no environment at all.
    if actions.shape != (len(self._envs),) + row and not (
        hasattr(space, 'n') and actions.shape == (len(self._envs),)):
      raise ValueError(f'action batch must have shape {(len(self._envs),) + row} (one row per '
                       f'environment), got {actions.shape}')
    return self._run([None if reset else {'action': row}
                      for reset, row in zip(self._needs_reset, actions)])

  def close(self) -> None:
    """Close every environment (and stop the workers)."""
    if self._closed:
      return
    self._closed = True
    for env in self._envs:
      env.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # interpreter shutdown may have torn down what close() needs
      pass

  def _run(self, actions: list[dict | None]) -> dict[str, np.ndarray]:
    if self._closed:
      raise RuntimeError('BatchEnv is closed')
    if self._parallel:  # send all commands first so the workers run at the same time
      for env, act in zip(self._envs, actions):
        env.send('reset', ()) if act is None else env.send('step', (act,))
      results, errors = [], []
      for env in self._envs:  # receive every reply so that no pipe is left out of step
        try:
          results.append(env.receive())
        except Exception as error:
          errors.append(error)
      if errors:
        raise errors[0]
    else:
      results = [env.reset() if act is None else env.step(act)
                 for env, act in zip(self._envs, actions)]
    self._needs_reset = np.array([bool(obs['is_last']) for obs in results])
    return stack(results)


def _portable(error: Exception) -> Exception:
  """The exception itself if it pickles (keeping its type), else a RuntimeError with its text."""
  try:
    pickle.dumps(error)
    return error
  except Exception:
    return RuntimeError(f'{type(error).__name__}: {error}')


def _work(conn: Any, ctor: Callable[[], Any]) -> None:
  """Worker process: build the environment, then serve (method, args) calls until 'close'."""
  env = None
  try:
    env = ctor()
    conn.send(('ok', (env.obs_space, env.act_space)))
    while True:
      method, args = conn.recv()
      if method == 'close':
        break
      try:
        conn.send(('ok', getattr(env, method)(*args)))
      except Exception as error:  # report to the parent, which re-raises it
        conn.send(('error', _portable(error)))
  except (EOFError, BrokenPipeError, KeyboardInterrupt):
    pass  # the parent went away
  except Exception as error:
    conn.send(('error', _portable(error)))
  finally:
    if env is not None:
      env.close()
    conn.close()


class _Worker:
  """One environment in its own process, called through a pipe."""

  def __init__(self, context: Any, ctor: Callable[[], Any], index: int):
    self._index = index
    self._conn, child = context.Pipe()
    self._process = context.Process(target=_work, args=(child, ctor), daemon=True)
    self._process.start()
    child.close()
    self.obs_space, self.act_space = self.receive()

  def send(self, method: str, args: tuple) -> None:
    self._conn.send((method, args))

  def receive(self) -> Any:
    try:
      status, value = self._conn.recv()
    except EOFError:
      self._process.join(timeout=1)
      raise RuntimeError(
          f'environment worker {self._index} died (exit code {self._process.exitcode}); with '
          "spawned workers the main script must be importable and guarded by "
          "if __name__ == '__main__'") from None
    if status == 'error':
      raise value
    return value

  def close(self) -> None:
    try:
      self._conn.send(('close', ()))
    except (BrokenPipeError, OSError):
      pass  # already gone
    self._process.join(timeout=5)
    if self._process.is_alive():  # stuck in the environment: stop it
      self._process.terminate()
      self._process.join(timeout=5)
    self._conn.close()
