"""Stops a run whose updates keep being skipped for non-finite losses or gradients.

The optimizers skip a step whose loss or gradients hold NaN or Inf (`optim.Optimizer`), so the
weights stay finite; a single skip (a float16 overflow, one odd batch) is harmless. When
`skip_limit` updates in a row skip, the run has diverged and more updates will not help: the
run stops with a one-line error naming the loss that failed first, so the user can act on it.

    update   u1   u2   u3   ...   u50
    skipped  -    x    x    ...   x      <- 50 in a row: stop, naming u2's failing loss
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

from dreamerv2_tf.errors import RunError

SUFFIX = '_skipped_steps'


class DivergenceError(RunError):
  """`skip_limit` updates in a row had a non-finite loss or gradients."""


class SkipWatch:
  """Counts updates in a row with a skipped optimizer step; raises after `limit` (0: never).

  latest: returns the latest checkpoint's path, named in the message.
  """

  def __init__(self, limit: int, latest: Callable[[], str | None] = lambda: None):
    self.limit, self._latest = int(limit), latest
    self.in_a_row = 0
    self._first: tuple | None = None  # (frames, failing loss, non-finite metrics) of the row.

  def __call__(self, metrics: Mapping[str, float], frames: int) -> None:
    """Takes the metrics of one update (`Agent.train`) at `frames` environment frames."""
    failed = [key[:-len(SUFFIX)] for key, value in metrics.items()
              if key.endswith(SUFFIX) and value > 0]
    if not failed:
      self.in_a_row, self._first = 0, None
      return
    self.in_a_row += 1
    if self._first is None:
      bad = [key for key, value in metrics.items() if not math.isfinite(value)]
      self._first = (frames, f'{failed[0]}_loss', bad)
    if self.limit > 0 and self.in_a_row >= self.limit:
      raise DivergenceError(self.message())

  def message(self) -> str:
    frames, loss, bad = self._first
    shown = ', '.join(bad[:6]) + (', ...' if len(bad) > 6 else '') if bad else 'none'
    return (f'training diverged: {self.in_a_row} updates in a row skipped for a non-finite '
            f'loss or gradient, the first at {frames:,} frames in {loss} (non-finite metrics: '
            f'{shown}); the last good checkpoint is {self._latest() or "none"}: lower the '
            'learning rates (--model_opt.lr, --actor_opt.lr, --critic_opt.lr) or use '
            '--precision 32, then rerun to resume from it')
