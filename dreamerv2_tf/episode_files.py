"""The replay's files: one `.npz` per episode segment, named so that a directory listing is enough
to load, order and size them.

  <timestamp>-<episode id>-<chunk index>-<length>.npz     e.g. 20261203T193426575465-dd4f...-0-501.npz

The timestamp orders the files as they were added; the chunk index orders an episode's
segments; the length lets a loader skip files beyond its capacity without opening them. Each
file holds one array per key with `length` steps, `is_first` and `is_last` among them; keys
starting with `log_` are stored but never loaded for training.
"""
from __future__ import annotations

import datetime
import pathlib
from typing import Any, NamedTuple

import numpy as np

from dreamerv2_tf import finite
from dreamerv2_tf.files import write_atomic

REQUIRED = ('is_first', 'is_last')
PATTERN = '<timestamp>-<id>-<chunk>-<length>.npz'


class Name(NamedTuple):
  stamp: str
  episode_id: str
  index: int
  length: int


def storage_dtype(dtype) -> np.dtype:
  """The dtype a value is stored with: 64-bit numbers (from Python scalars) become 32-bit, which
  the agent and tf.data expect."""
  dtype = np.dtype(dtype)
  wide = dtype.kind in 'fi' and dtype.itemsize > 4
  return np.dtype({'f': np.float32, 'i': np.int32}[dtype.kind]) if wide else dtype


def convert(key: str, value: Any) -> np.ndarray:
  """A copy of `value` in its storage dtype (environments may reuse observation buffers)."""
  value = np.asarray(value)
  if value.dtype.kind == 'O':
    raise ValueError(f'key {key!r} has dtype object; allowed: numeric, bool or string values')
  return np.array(value, dtype=storage_dtype(value.dtype))


def parse(name: str) -> Name | None:
  """The parts of a segment's file name, or None if it is not one."""
  parts = name[:-len('.npz')].split('-') if name.endswith('.npz') else []
  if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
    return None
  return Name(parts[0], parts[1], int(parts[2]), int(parts[3]))


def write(directory: pathlib.Path, when: datetime.datetime, episode_id: str, index: int,
          data: dict[str, np.ndarray]) -> str:
  """Writes one segment atomically (see `files.write_atomic`) and returns its file name."""
  name = f'{when:%Y%m%dT%H%M%S%f}-{episode_id}-{index}-{len(data["is_first"])}.npz'
  write_atomic(directory / name, lambda f: np.savez_compressed(f, **data), 'episode')
  return name


def read(path: pathlib.Path, length: int) -> dict[str, np.ndarray]:
  """The segment's arrays without `log_*` keys; ValueError if it is not `length` steps of
  finite values with the required keys (a file written before the finite check may hold NaN)."""
  with np.load(path, allow_pickle=False) as data:
    segment = {key: data[key] for key in data.files if not key.startswith('log_')}
  lengths = {key: len(value) for key, value in segment.items()}
  if any(key not in segment for key in REQUIRED) or set(lengths.values()) != {length}:
    raise ValueError(f'expected keys {REQUIRED} with {length} steps, got lengths {lengths}')
  if bad := finite.first_nonfinite(segment, axis0=True):
    raise ValueError(f'{bad[2]} in key {bad[0]!r} at step {bad[1]}')
  return segment
