"""Where a run's wall time goes: seconds per part (env, policy, replay, train, eval).

The loop wraps the calls of each part with `timed`; at every periodic write, `log` turns the
seconds since the last write into `time_share_<part>` scalars (`other` is the rest: callbacks,
logging, checkpoints), with the env's own frame rate (`env_fps`) and the mean policy call
(`policy_ms`). Two perf_counter calls per timed call.
"""
from __future__ import annotations

import time
from typing import Callable

PARTS = ('env', 'policy', 'replay', 'train', 'eval')


class TimeShare:
  """Seconds and calls per part since the last `log`."""

  def __init__(self):
    self.spent = dict.fromkeys(PARTS, 0.0)
    self.calls = dict.fromkeys(PARTS, 0)
    self._start = time.perf_counter()

  def timed(self, part: str, fn: Callable) -> Callable:
    """`fn`, with the time of each call added to `part`."""
    def call(*args, **kwargs):
      start = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        self.spent[part] += time.perf_counter() - start
        self.calls[part] += 1
    return call

  def log(self, logger, env_frames_per_call: int) -> None:
    """Writes the shares to `logger` and starts a new period.

    env_frames_per_call: frames one env call makes (envs in the batch x action repeat).
    """
    now = time.perf_counter()
    wall = now - self._start
    spent, calls = self.spent, self.calls
    if wall > 0:
      for part, seconds in spent.items():
        logger.scalar(f'time_share_{part}', seconds / wall)
      logger.scalar('time_share_other', max(0.0, 1.0 - sum(spent.values()) / wall))
      if spent['env'] > 0:  # Each env call steps (or resets) every env of the batch.
        logger.scalar('env_fps', calls['env'] * env_frames_per_call / spent['env'])
      if calls['policy']:
        logger.scalar('policy_ms', 1e3 * spent['policy'] / calls['policy'])
    self.spent = dict.fromkeys(PARTS, 0.0)
    self.calls = dict.fromkeys(PARTS, 0)
    self._start = now
