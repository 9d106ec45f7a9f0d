"""A run's checkpoints: restored at start, written only from finite weights, never half-written.

`logdir/checkpoints/` keeps the newest 3 (`ckpt-<agent step>.index` / `.data-*`; the loop saves
after evaluations, every `checkpoint_minutes` and at a stop) and the `checkpoint` file that names
the latest. A save
  - refuses non-finite weights (`NonFiniteWeightsError`): a NaN checkpoint would, after
    `max_to_keep` saves, replace every good one;
  - that fails (disk full, unwritable) removes its own partial files and raises
    `files.WriteError`; the earlier checkpoints and the `checkpoint` file stay as they were;
  - is skipped when the latest checkpoint already holds this step (a resumed run that stops
    before acting), so a good checkpoint is never overwritten in place; with `replace` (a
    resumed run that redid that step's evaluation) it is rewritten: a failed rewrite puts the
    old one back, a killed one leaves the checkpoint before it to resume from.
A restore is strict: every object must find its values, except the `added` ones, which
checkpoints written before they existed lack (they keep their values; `restore` names them).
"""
from __future__ import annotations

import os
import pathlib
import shutil
from typing import Any, Iterable, Mapping

import numpy as np
import tensorflow as tf

from dreamerv2_tf.errors import RunError
from dreamerv2_tf.files import WriteError

MAX_TO_KEEP = 3
ASIDE = 'replaced-'  # Prefix of a checkpoint's files while it is being rewritten.


class NonFiniteWeightsError(RunError):
  """A checkpoint was asked for while a weight held NaN or Inf."""


class Checkpoints:
  """The checkpoints of `objects` (names to trackables, as `tf.train.Checkpoint` takes them)
  in `directory`; `added`: the names of those that older checkpoints lack."""

  def __init__(self, objects: Mapping[str, Any], directory: str | os.PathLike,
               variables: list, added: Iterable[str] = ()):
    self.directory = pathlib.Path(directory)
    self._objects = dict(objects)
    self._added = tuple(added)
    checkpoint = tf.train.Checkpoint(**self._objects)
    self._checkpoint = checkpoint
    self._variables = variables  # What must be finite: every weight, slot and counter.
    self._manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                               max_to_keep=MAX_TO_KEEP)

  @property
  def latest(self) -> str | None:
    """Path prefix of the newest complete checkpoint, or None."""
    return self._manager.latest_checkpoint

  def restore(self, path: str) -> list[str]:
    """Restores checkpoint `path`; returns the `added` names it lacks (left unchanged)."""
    saved = {name.split('/', 1)[0] for name, _ in tf.train.list_variables(path)}
    missing = [name for name in self._added if name not in saved]
    objects = {k: v for k, v in self._objects.items() if k not in missing}
    tf.train.Checkpoint(**objects).restore(path).assert_existing_objects_matched()
    return missing

  def save(self, number: int, replace: bool = False) -> str | None:
    """Writes checkpoint `number` (agent steps); returns its path, or None if it is the
    latest already and `replace` is false."""
    latest = self.latest
    again = latest is not None and pathlib.Path(latest).name == f'ckpt-{number}'
    if again and not replace:
      return None
    if bad := first_nonfinite(self._variables):
      raise NonFiniteWeightsError(
          f'not writing checkpoint {number}: weight {bad} holds NaN or Inf; the checkpoints '
          f'on disk are the earlier, finite ones (latest {latest}); rerun to resume from it')
    state = self._set_aside(number) if again else None
    try:
      path = self._manager.save(checkpoint_number=number)
    except (OSError, tf.errors.OpError) as e:
      self._remove_partial(number)
      if state is not None:
        try:
          self._put_back(number, state)
        except (OSError, tf.errors.OpError):
          pass  # (The same full disk: the state file then names the checkpoint before.)
      raise WriteError.of(self.directory / f'ckpt-{number}', e, 'checkpoint') from e
    for old in self.directory.glob(f'{ASIDE}ckpt-{number}.*'):
      old.unlink()
    return path

  # Rewriting the latest checkpoint: its files are renamed aside and the one before it is
  # named the latest (each step atomic), then it is written anew. A failed write puts it
  # back; a kill in between leaves the one before it to resume from.

  def _set_aside(self, number: int):
    state = tf.train.get_checkpoint_state(str(self.directory))
    names = [pathlib.Path(p).name for p in state.all_model_checkpoint_paths]
    times = list(state.all_model_checkpoint_timestamps)
    self._write_state(names[:-1], times[:-1], state.last_preserved_timestamp)
    for path in self.directory.glob(f'ckpt-{number}.*'):  # .index and .data-*
      path.rename(path.with_name(ASIDE + path.name))
    return names, times, state.last_preserved_timestamp

  def _put_back(self, number: int, state) -> None:
    for path in self.directory.glob(f'{ASIDE}ckpt-{number}.*'):
      path.rename(path.with_name(path.name[len(ASIDE):]))
    self._write_state(*state)

  def _write_state(self, names: list, times: list, preserved: float) -> None:
    """Writes the `checkpoint` state file (atomically) and makes the manager read it."""
    if names:
      # With the timestamps: a new manager tracks (and rotates) only the checkpoints saved
      # after `last_preserved_timestamp`.
      tf.compat.v1.train.update_checkpoint_state(
          str(self.directory), names[-1], names, all_model_checkpoint_timestamps=times,
          last_preserved_timestamp=preserved)
    else:
      (self.directory / 'checkpoint').unlink(missing_ok=True)
    self._manager = tf.train.CheckpointManager(self._checkpoint, self.directory,
                                               max_to_keep=MAX_TO_KEEP)

  def _remove_partial(self, number: int) -> None:
    """Deletes the files of the failed save `number` (never those of a listed checkpoint)."""
    kept = {pathlib.Path(p).name for p in self._manager.checkpoints}
    name = f'ckpt-{number}'
    if name in kept:
      return
    for path in self.directory.glob(f'{name}[._]*'):
      if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
      else:
        path.unlink(missing_ok=True)


def first_nonfinite(variables: list) -> str | None:
  """The name of the first floating-point variable that holds NaN or Inf, else None."""
  floats = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
  if not floats:
    return None
  # One reduction per variable, then a single transfer of the flags.
  flags = tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in floats]).numpy()
  if flags.all():
    return None
  bad = floats[int(np.argmin(flags))]
  return getattr(bad, 'path', None) or bad.name
