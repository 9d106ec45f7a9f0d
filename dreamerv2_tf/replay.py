"""Replay buffer: episodes stored as compressed chunk files, sequences sampled for training.

Storage. An episode is written as one or more files (`episode_files`: `<timestamp>-<episode
id>-<chunk index>-<length>.npz`), each an independent segment on disk. While an episode runs, its
oldest `chunk` pending steps are written once `chunk + minlen` are pending; holding `minlen`
steps back makes the piece written at `is_last` at least `minlen` long, so episode ends stay
sampleable. A 27k-step Atari episode is thus trainable and crash-safe after ~1k steps, and
a crash loses < `chunk + minlen` steps per running episode (a stop loses none: `flush`).
Loading and eviction work per file; sampling joins an episode's consecutive segments in
memory (a run), so episodes are picked and windowed as in the paper, whatever their number of
chunks. Files are written atomically (hidden `.tmp` file in the same directory, fsync,
`os.replace`), so a crash never leaves a half-written `.npz`; stray `.tmp` files are ignored,
not deleted, as another process may still be writing them.

Memory. Segments live in RAM as stacked numpy arrays (`log_*` keys stay on disk only);
`bytes_per_step()` gives the RAM per step. For Atari (64x64x1 uint8 image 4096 B, float32
reward 4 B, three bool flags 3 B, 6-dim float32 one-hot action 24 B) it is 4127 B, so the
default capacity of 2e6 steps needs ~8.3 GB. To fit a budget, set `capacity = budget_bytes
// bytes_per_step(example)`; unsaved tails of running episodes (< `chunk + minlen` steps per
worker) come on top. One-hot actions as uint8 would be lossless but save only 18 B/step.
"""
from __future__ import annotations

import collections
import datetime
import math
import os
import pathlib
import threading
import uuid
import warnings
from typing import Any, Iterator, Mapping

import numpy as np

from dreamerv2_tf import episode_files
from dreamerv2_tf import finite
from dreamerv2_tf.episode_files import REQUIRED, convert


def _int(name: str, value: Any, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
  return int(value)


def bytes_per_step(example: Mapping[str, Any]) -> int:
  """RAM in bytes per stored step, from a transition or a dict of spaces (gym `Dict` ok).

  Merge observation and action spaces to count the action; Discrete spaces count as float32
  one-hot vectors, as actions are stored. `log_*` keys are skipped: they stay on disk.
  """
  items = getattr(example, 'spaces', example)
  if not isinstance(items, Mapping):
    raise ValueError(f'bytes_per_step: expected a dict of values or spaces, '
                     f'got {type(example).__name__}')
  total = 0
  for key, value in items.items():
    if key.startswith('log_'):
      continue
    if hasattr(value, 'n') and getattr(value, 'shape', None) == ():  # Discrete space.
      total += int(value.n) * 4
    else:  # Array, Python scalar or Box space.
      value = value if hasattr(value, 'dtype') else np.asarray(value)
      total += math.prod(value.shape) * episode_files.storage_dtype(value.dtype).itemsize
  return total


class Replay:
  """Disk-backed replay of episodes, sampled as fixed-length training chunks.

  Files in `directory` are loaded on construction, newest first up to `capacity` steps, so
  a restarted run continues with its data; unreadable files are skipped with a warning.
  `capacity` bounds the steps kept in RAM: beyond it the oldest segments are evicted from
  memory (FIFO), but their files stay on disk. Sampling follows the paper: an episode (its
  segments in memory, joined) is picked uniformly, then a sequence of `minlen`..`maxlen`
  steps in it (episode ends favoured with `prioritize_ends`); with `ongoing`, unsaved tails
  of running episodes with at least `minlen` steps are picked too, each as one more episode.
  Safe to add from one thread while `dataset()` samples.

  nonfinite: what a step with NaN or Inf in a float value does (see `finite`): `error` raises
  `NonFiniteDataError` naming the key, the episode and the step; `drop` drops the episode
  (its pending steps and the rest of it; chunks of a long episode already written were
  finite and stay) and counts it in `stats['dropped_episodes']`. Neither stores the value.
  """

  def __init__(self, directory: str | os.PathLike, capacity: float = 2e6,
               ongoing: bool = False, minlen: int = 50, maxlen: int = 50,
               prioritize_ends: bool = True, chunk: int = 1000, seed: int = 0,
               nonfinite: str = 'error'):
    if (isinstance(capacity, bool) or not isinstance(capacity, (int, float, np.number))
        or not math.isfinite(capacity) or capacity < 1):
      raise ValueError(f'capacity must be a finite number of steps >= 1, got {capacity!r}')
    self._minlen = _int('minlen', minlen)
    self._maxlen = _int('maxlen', maxlen, self._minlen)
    self._chunk = _int('chunk', chunk, self._minlen)  # Shorter chunks are never sampled.
    self._capacity = int(capacity)
    self._ongoing_tails = bool(ongoing)
    self._prioritize_ends = bool(prioritize_ends)
    self._nonfinite = finite.check_mode(nonfinite)
    self._dropped = 0
    self._rng = np.random.default_rng(seed)
    self._lock = threading.RLock()  # tf.data samples from its own thread.
    self.directory = pathlib.Path(directory).expanduser()
    self.directory.mkdir(parents=True, exist_ok=True)
    self._segments = collections.OrderedDict()  # File name -> (episode id, arrays), oldest first.
    self._sampleable = []  # Names of segments with >= minlen steps, oldest first.
    self._head = 0  # Entries before this were evicted; FIFO keeps the list in age order.
    self._episodes = collections.Counter()  # Episode id -> segments in memory.
    # Runs: consecutive chunks of one episode in memory, sampled as one episode.
    self._runs = {}  # Run key (its first segment's name) -> segment names, oldest first.
    self._run_of = {}  # Segment name -> run key.
    self._run_end = {}  # Episode id -> (run key, chunk index of its newest segment).
    self._ongoing = {}  # Worker -> {'id', 'index', 'steps'}.
    self._spec = None  # Key -> (dtype, per-step shape), fixed by the first data seen.
    self._last_stamp = datetime.datetime.min
    self._loaded_steps = self._total_steps = self._total_episodes = self._skipped = 0
    self._load()

  @property
  def stats(self) -> dict[str, int]:
    """Steps/episodes ever added (incl. loaded files), in memory now, and skipped files."""
    # An episode counts once its first file is written, also if a crash cut it short.
    with self._lock:
      return {'total_steps': self._total_steps, 'total_episodes': self._total_episodes,
              'loaded_steps': self._loaded_steps, 'loaded_episodes': len(self._episodes),
              'loaded_segments': len(self._segments), 'skipped_files': self._skipped,
              'dropped_episodes': self._dropped}

  @property
  def can_sample(self) -> bool:
    """Whether a sequence of at least `minlen` steps is there to sample (shorter ones never are)."""
    with self._lock:
      try:
        self._available()
      except RuntimeError:
        return False
      return True

  def add_step(self, transition: Mapping[str, Any], worker: Any = 0) -> None:
    """Append a transition to `worker`'s running episode, writing chunks and the end.

    If writing a file fails, the step is not added and the exception propagates, so the
    call can be retried.
    """
    step = {key: convert(key, value) for key, value in _mapping('add_step', transition).items()}
    with self._lock:
      if message := self._spec_mismatch({k: (v.dtype, v.shape) for k, v in step.items()}):
        raise ValueError(f'add_step: {message}')
      run = self._ongoing.get(worker)
      if run is None and not step['is_first']:
        raise ValueError(f'add_step: worker {worker!r} starts an episode with is_first=False; '
                         'allowed: is_first=True')
      if run is not None and step['is_first']:
        raise ValueError(f'add_step: worker {worker!r} got is_first=True with '
                         f'{len(run["steps"])} steps pending; allowed: is_last=True first')
      if run is not None and run['steps'] and step.keys() != run['steps'][0].keys():
        raise ValueError(f'add_step: keys {sorted(step)} differ from the episode\'s keys '
                         f'{sorted(run["steps"][0])}')
      if run is None:
        run = self._ongoing[worker] = {'id': uuid.uuid4().hex, 'index': 0, 'steps': [],
                                       'count': 0, 'dropped': False}
      run['count'] += 1
      if run['dropped'] or self._check_finite(step, run, worker):
        if step['is_last']:
          del self._ongoing[worker]
        return
      run['steps'].append(step)
      self._total_steps += 1
    if not step['is_last'] and len(run['steps']) < self._chunk + self._minlen:
      return
    size = len(run['steps']) if step['is_last'] else self._chunk
    try:
      self._store(run['id'], run['index'], _segment(run['steps'][:size]))
    except BaseException:
      with self._lock:  # Undo, so a retry does not duplicate the step.
        run['steps'].pop()
        self._total_steps -= 1
        if not run['steps']:
          del self._ongoing[worker]
      raise
    with self._lock:
      del run['steps'][:size]
      run['index'] += 1
      if step['is_last']:
        del self._ongoing[worker]

  def flush(self) -> int:
    """Writes every running episode's pending steps as its last segment; returns their number.

    For a run that stops mid-episode: the steps are kept (a file without `is_last`, as a
    crash-cut episode's), the episode counts as ended, and the worker's next step must be
    `is_first`. Episodes shorter than `minlen` are kept too but never sampled. If a write
    fails, that episode stays pending (a retry writes it) and the exception propagates.
    """
    written = 0
    with self._lock:
      pending = list(self._ongoing.items())
    for worker, run in pending:
      if run['steps']:
        self._store(run['id'], run['index'], _segment(run['steps']))
        written += len(run['steps'])
      with self._lock:
        del self._ongoing[worker]
    return written

  def add_episode(self, episode: Mapping[str, Any]) -> None:
    """Add a complete episode: dict of arrays `[L, ...]`, is_first at 0, is_last at L-1."""
    data = {key: convert(key, value) for key, value in _mapping('add_episode', episode).items()}
    lengths = {key: (len(value) if value.ndim else None) for key, value in data.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values() or not data['is_first'].size:
      raise ValueError(f'add_episode: all values need the same length >= 1, got {lengths}')
    if not data['is_first'][0] or not data['is_last'][-1]:
      raise ValueError('add_episode: is_first[0] and is_last[-1] must be True, got '
                       f'{bool(data["is_first"][0])} and {bool(data["is_last"][-1])}')
    with self._lock:
      if message := self._spec_mismatch({k: (v.dtype, v.shape[1:]) for k, v in data.items()}):
        raise ValueError(f'add_episode: {message}')
      if bad := finite.first_nonfinite(data, axis0=True):
        key, step, value = bad
        if self._nonfinite == 'error':
          raise finite.NonFiniteDataError(finite.describe(key, value, step, 'given to add_episode'))
        self._dropped += 1
        return
    episode_id, length, start, index = uuid.uuid4().hex, len(data['is_first']), 0, 0
    while start < length:  # Same pieces as add_step would produce.
      stop = start + self._chunk if length - start > self._chunk + self._minlen else length
      self._store(episode_id, index, {k: v[start:stop].copy() for k, v in data.items()})
      with self._lock:
        self._total_steps += stop - start
      start, index = stop, index + 1

  def sample(self, batch: int, length: int) -> dict[str, np.ndarray]:
    """A batch of training chunks as numpy arrays `[batch, length, ...]`."""
    return next(self.batches(batch, length))

  def batches(self, batch: int, length: int) -> Iterator[dict[str, np.ndarray]]:
    """The chunks of `dataset`, batched as numpy arrays in the calling thread.

    Each batch is drawn when it is asked for, so it depends only on the replay's seed and on
    what was added before: the `deterministic` loop trains on these.
    """
    _int('batch', batch), _int('length', length)
    with self._lock:
      self._available()
    chunks = self._chunks(length)
    while True:
      items = [next(chunks) for _ in range(batch)]
      yield {key: np.stack([item[key] for item in items]) for key in items[0]}

  def dataset(self, batch: int, length: int):
    """A `tf.data.Dataset` of training chunks `[batch, length, ...]`, sampled in background.

    Chunks concatenate consecutive sampled sequences; `is_first` is True at every chunk
    start and wherever a new sequence begins, so the world model resets its state there.
    """
    import tensorflow as tf  # Lazy: the replay itself does not need TensorFlow.
    _int('batch', batch), _int('length', length)
    with self._lock:
      self._available()  # Fail now rather than inside the tf.data thread.
      signature = {key: tf.TensorSpec((length,) + shape, tf.as_dtype(np.dtype(dtype)))
                   for key, (dtype, shape) in self._spec.items()}
    data = tf.data.Dataset.from_generator(
        lambda: self._chunks(length), output_signature=signature)
    return data.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def _chunks(self, length: int) -> Iterator[dict[str, np.ndarray]]:
    sequence = self._sample_sequence()
    while True:
      parts, needed = [], length
      while needed:
        take = min(needed, len(sequence['is_first']))
        parts.append({k: v[:take] for k, v in sequence.items()})
        sequence = {k: v[take:] for k, v in sequence.items()}
        needed -= take
        if not len(sequence['is_first']):
          sequence = self._sample_sequence()
      chunk = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
      chunk['is_first'][0] = True  # Training starts every chunk from a fresh state.
      yield chunk

  def _available(self) -> tuple[int, list]:
    tails = []
    if self._ongoing_tails:
      tails = [r['steps'] for r in self._ongoing.values() if len(r['steps']) >= self._minlen]
    stored = len(self._sampleable) - self._head
    if not stored and not tails:
      where = 'stored segment or ongoing tail' if self._ongoing_tails else 'stored segment'
      raise RuntimeError(f'Replay has no {where} with at least minlen={self._minlen} steps '
                         f'(loaded_steps={self._loaded_steps}); add data before sampling')
    return stored, tails

  def _sample_sequence(self) -> dict[str, np.ndarray]:
    with self._lock:
      stored, tails = self._available()
      while True:  # Uniform over episodes: a segment of a run of n is kept with p = 1/n.
        pick = int(self._rng.integers(stored + len(tails)))
        if pick >= stored:
          break
        run = self._runs[self._run_of[self._sampleable[self._head + pick]]]
        if len(run) == 1 or self._rng.random() * len(run) < 1:
          break
      if pick < stored:
        parts = [self._segments[name][1] for name in run]
        total = sum(len(part['is_first']) for part in parts)
      else:
        steps = tails[pick - stored]
        total = len(steps)
      # Random lengths keep sequence boundaries from aligning with chunk boundaries.
      length = min(total, self._maxlen) - int(self._rng.integers(self._minlen))
      length = max(self._minlen, length)
      upper = total - length + 1 + (self._minlen if self._prioritize_ends else 0)
      start = min(int(self._rng.integers(upper)), total - length)
      if pick < stored:
        sequence = _window(parts, start, length)
      else:
        sequence = {k: np.stack([s[k] for s in steps[start:start + length]]) for k in self._spec}
    sequence['is_first'] = sequence['is_first'].copy()  # Never modify stored arrays.
    sequence['is_first'][0] = True
    return sequence

  def _check_finite(self, step: dict, run: dict, worker: Any) -> bool:
    """Whether `step` holds NaN/Inf (then its episode is dropped); raises in `error` mode."""
    bad = finite.first_nonfinite(step)
    if bad is None:
      return False
    key, _, value = bad
    self._total_steps -= len(run['steps'])
    run['steps'].clear()
    if self._nonfinite == 'error':
      del self._ongoing[worker]  # The next step of this worker may start a new episode.
      raise finite.NonFiniteDataError(finite.describe(
          key, value, run['count'] - 1, f'{run["id"][:8]} of env {worker}'))
    run['dropped'] = True
    self._dropped += 1
    return True

  def _spec_mismatch(self, items: dict) -> str | None:
    """Compares keys, dtypes and per-step shapes with the first data seen."""
    got = {k: (str(d), tuple(s)) for k, (d, s) in items.items() if not k.startswith('log_')}
    self._spec = self._spec or got
    bad = sorted(k for k in got.keys() | self._spec.keys() if got.get(k) != self._spec.get(k))
    if bad:
      return (f'got {", ".join(f"{k}={got.get(k)}" for k in bad)}; allowed (as stored): '
              f'{", ".join(f"{k}={self._spec.get(k)}" for k in bad)}')
    return None

  def _store(self, episode_id: str, index: int, data: dict) -> None:
    with self._lock:  # Strictly increasing stamps keep the file order equal to add order.
      tick = self._last_stamp + datetime.timedelta(microseconds=1)
      self._last_stamp = now = max(datetime.datetime.now(), tick)
    name = episode_files.write(self.directory, now, episode_id, index, data)
    with self._lock:
      self._total_episodes += index == 0
      self._insert(name, episode_id, {key: data[key] for key in self._spec}, index)

  def _insert(self, name: str, episode_id: str, segment: dict, index: int) -> None:
    size = len(segment['is_first'])
    self._segments[name] = (episode_id, segment)
    self._episodes[episode_id] += 1
    key, last = self._run_end.get(episode_id, (None, None))
    if key not in self._runs or index != last + 1:  # A gap (a file skipped): a new run.
      key = name
      self._runs[key] = []
    self._runs[key].append(name)
    self._run_of[name] = key
    self._run_end[episode_id] = (key, index)
    self._loaded_steps += size
    if size >= self._minlen:
      self._sampleable.append(name)
    while self._loaded_steps > self._capacity:
      old, (old_id, old_segment) = self._segments.popitem(last=False)
      self._loaded_steps -= len(old_segment['is_first'])
      self._episodes[old_id] -= 1
      if not self._episodes[old_id]:
        del self._episodes[old_id]
      key = self._run_of.pop(old)
      self._runs[key].pop(0)  # FIFO: the oldest segment is its run's first.
      if not self._runs[key]:
        del self._runs[key]
        if self._run_end.get(old_id, (None,))[0] == key:
          del self._run_end[old_id]
      if self._head < len(self._sampleable) and self._sampleable[self._head] == old:
        self._head += 1
    if self._head > 1000 and 2 * self._head > len(self._sampleable):
      del self._sampleable[:self._head]  # Amortised O(1) eviction.
      self._head = 0

  def _load(self) -> None:
    files, episode_ids = [], set()
    for path in self.directory.glob('*.npz'):
      parsed = episode_files.parse(path.name)
      if parsed is None:
        self._skip(path, f'name is not {episode_files.PATTERN}')
        continue
      files.append((parsed, path))
      episode_ids.add(parsed[1])
      self._total_steps += parsed[3]
    self._total_episodes = len(episode_ids)
    files.sort(key=lambda item: (item[0][0], item[0][2]))
    chosen, budget = [], self._capacity
    for (_, episode_id, index, length), path in reversed(files):  # Newest first.
      if length > budget:
        break
      segment = self._read(path, length)
      if segment is None:
        self._total_steps -= length
        continue
      chosen.append((path.name, episode_id, segment, index))
      budget -= length
    for name, episode_id, segment, index in reversed(chosen):
      self._insert(name, episode_id, segment, index)

  def _read(self, path: pathlib.Path, length: int) -> dict | None:
    try:
      segment = episode_files.read(path, length)
      if message := self._spec_mismatch({k: (v.dtype, v.shape[1:]) for k, v in segment.items()}):
        raise ValueError(message)
    except Exception as e:  # Any unreadable file is skipped; a restart must not crash.
      self._skip(path, f'{type(e).__name__}: {e}')
      return None
    return segment

  def _skip(self, path: pathlib.Path, reason: str) -> None:
    self._skipped += 1
    warnings.warn(' '.join(f'Replay: skipping file {path}: {reason}'.split()))


def _segment(steps: list[dict]) -> dict[str, np.ndarray]:
  """Pending steps (dicts of per-step values, `log_*` keys too) stacked into a segment."""
  return {key: np.stack([step[key] for step in steps]) for key in steps[0]}


def _window(parts: list[dict], start: int, length: int) -> dict[str, np.ndarray]:
  """Steps start..start+length of the segments `parts` joined (a view within one segment)."""
  pieces = []
  for part in parts:
    size = len(part['is_first'])
    if start >= size:
      start -= size
      continue
    take = min(size - start, length)
    pieces.append({k: v[start:start + take] for k, v in part.items()})
    start, length = 0, length - take
    if not length:
      break
  if len(pieces) == 1:
    return pieces[0]
  return {key: np.concatenate([piece[key] for piece in pieces]) for key in pieces[0]}


def _mapping(where: str, value: Any) -> Mapping:
  if not isinstance(value, Mapping) or any(key not in value for key in REQUIRED):
    got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
    raise ValueError(f'{where}: expected a dict with keys {REQUIRED}, got {got}')
  return value
