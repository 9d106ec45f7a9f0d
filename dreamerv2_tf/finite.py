"""Non-finite values (NaN, Inf) in environment data: where they are and what to do with them.

An env that returns NaN or Inf (a physics blow-up, a bug in a user's env) would otherwise be
stored in the replay and trained on, and one such batch turns every weight into NaN. The replay
checks every step it is given (`Replay(nonfinite=...)`, config key `replay.nonfinite`):

  error  the run stops with a one-line error naming the key, the episode and the step
  drop   the episode is dropped (counted in `*_dropped_episodes`); it never reaches a batch
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dreamerv2_tf.errors import RunError

MODES = ('error', 'drop')


class NonFiniteDataError(RunError):
  """An environment returned NaN or Inf and `replay.nonfinite` is `error`."""


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f'nonfinite {mode!r}; allowed: {", ".join(MODES)}')
  return mode


def first_nonfinite(data: Mapping[str, Any], axis0: bool = False) -> tuple | None:
  """The first (key, step, value) with a NaN or Inf among floating-point values, else None.

  axis0: the values are sequences `[L, ...]` and `step` is the index along the first axis
  (None for a single step). `log_*` keys are skipped: they are logged, never trained on.
  """
  for key, value in data.items():
    if key.startswith('log_'):
      continue
    value = np.asarray(value)
    if value.dtype.kind not in 'fc' or np.isfinite(value).all():
      continue
    if not axis0 or value.ndim == 0:
      return key, None, value.flat[np.argmin(np.isfinite(value).ravel())]
    bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
    step = int(np.argmax(bad))
    return key, step, value[step].flat[np.argmin(np.isfinite(value[step]).ravel())]
  return None


def describe(key: str, value: Any, step: int, episode: str) -> str:
  """The one-line message of `NonFiniteDataError`."""
  return (f'the environment returned {value} in key {key!r} at step {step} of episode '
          f'{episode}; fix the environment, or set --replay.nonfinite drop to drop such '
          'episodes and go on')


def sanitize(obs: Mapping[str, Any]) -> dict:
  """Observations with NaN/Inf replaced by 0, for acting in `drop` mode.

  The policy carries its latent state across steps, and `is_first` resets it by multiplying
  with 0, which keeps a NaN: one non-finite observation would poison every later action.
  """
  out = {}
  for key, value in obs.items():
    array = np.asarray(value)
    if array.dtype.kind in 'fc' and not np.isfinite(array).all():
      array = np.where(np.isfinite(array), array, 0).astype(array.dtype)
    out[key] = array
  return out
