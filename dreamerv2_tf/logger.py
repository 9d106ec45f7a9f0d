"""Logging of a run: a terminal line per period, `metrics.jsonl`, and TensorBoard.

Every record carries `step` in environment frames (agent steps x action repeat), the unit of the
paper's curves. `metrics.jsonl` holds one JSON object per line (`pandas.read_json(path,
lines=True)` reads it); lines are flushed as written, so a killed run keeps what it logged.

Non-finite values are logged, never dropped: a diverging loss must be visible. The terminal
shows `nan` / `inf`, TensorBoard stores the value itself, and `metrics.jsonl` writes `null`:
NaN and Infinity are not JSON (strict readers such as jq, JavaScript or Go reject the whole
line), while `null` is, and pandas reads it as NaN in a float column.

Every start of the loop appends `{"step": F, "started": true, "evaluated": E}`: F is the frame
it starts from (its checkpoint's; 0 without one), E the frame of the last evaluation that
checkpoint records as finished (null: none). Rows before it at frames after F, and evaluations
after E, were logged by a process killed after its last checkpoint (or a stop during the first
evaluation left the random-policy episode before it): the new process logs them again, so
readers of the curve (`compare.py`) drop the earlier ones.

A failed write (disk full, unwritable logdir) raises `files.WriteError` naming the file; a line
of `metrics.jsonl` is written whole or not at all (a partial line is cut off again).
"""
from __future__ import annotations

import collections
import io
import json
import math
import os
import pathlib
import sys
import time
from typing import Mapping

import numpy as np

from dreamerv2_tf.files import WriteError

# Keys shown on the terminal line, in this order, when present.
TERMINAL_KEYS = ('train_return', 'eval_return', 'model_loss', 'image_loss', 'reward_loss',
                 'kl_loss', 'actor_loss', 'critic_loss', 'actor_ent', 'fps', 'train_steps_per_s')


class Logger:
  """Collects scalars, images and videos, and writes them to all outputs on `write()`.

  With `logdir=None` (the non-chief workers of a multi-worker run) it only prints to `stream`.
  """

  def __init__(self, logdir: str | pathlib.Path | None, multiplier: int = 1,
               tensorboard: bool = True, total_frames: float | None = None, stream=None):
    self.logdir = pathlib.Path(logdir) if logdir is not None else None
    self.multiplier = multiplier
    self.total_frames = total_frames
    self.stream = stream or sys.stdout  # At call time: contextlib.redirect_stdout applies.
    self._scalars: dict[str, float] = {}
    self._means: dict[str, list] = {}
    self._videos: dict[str, np.ndarray] = {}
    self._jsonl, self._writer = None, None
    if self.logdir is not None:
      self._jsonl_path = self.logdir / 'metrics.jsonl'
      try:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = os.open(self._jsonl_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
      except OSError as e:
        raise WriteError.of(self._jsonl_path, e, 'metrics') from e
    if tensorboard and self.logdir is not None:
      import tensorflow as tf
      self._writer = tf.summary.create_file_writer(str(self.logdir), max_queue=1000)
    self._last_time, self._last_frames = None, None
    self._start = time.time()
    # The ETA's rate: the median of the last three periods' fps, so that one period slowed by a
    # suspended machine or a paused process (SIGSTOP) does not swing it to days.
    self._recent_fps: collections.deque = collections.deque(maxlen=3)

  def frames(self, agent_steps: int) -> int:
    return int(agent_steps) * self.multiplier

  def scalar(self, name: str, value) -> None:
    self._scalars[name] = float(value)

  def mean(self, name: str, value) -> None:
    """Accumulates values (e.g. episode returns) whose mean is written at the next `write`."""
    self._means.setdefault(name, []).append(float(value))

  def add(self, metrics: Mapping[str, float], prefix: str = '') -> None:
    for key, value in metrics.items():
      self.scalar(f'{prefix}{key}', value)

  def video(self, name: str, frames: np.ndarray) -> None:
    """frames: `[T, H, W, C]` uint8 or floats in [0, 1]."""
    self._videos[name] = np.asarray(frames)

  def discard(self, prefix: str) -> None:
    """Drops what was logged under names starting with `prefix` since the last `write`."""
    for store in (self._scalars, self._means, self._videos):
      for name in [k for k in store if k.startswith(prefix)]:
        del store[name]

  def started(self, agent_steps: int, evaluated: int | None) -> None:
    """Marks a start of the loop at `agent_steps` whose checkpoint records the evaluation at
    `evaluated` agent steps as its last (None: none) in metrics.jsonl (module docstring)."""
    if self._jsonl is not None:
      record = {'step': self.frames(agent_steps), 'started': True,
                'evaluated': None if evaluated is None else self.frames(evaluated)}
      self._append_line(json.dumps(record) + '\n')

  def write(self, agent_steps: int, fps: bool = False) -> None:
    step = self.frames(agent_steps)
    if fps:
      now = time.time()
      if self._last_time is not None and now > self._last_time:
        self._scalars['fps'] = (step - self._last_frames) / (now - self._last_time)
      self._last_time, self._last_frames = now, step
    for key, values in self._means.items():
      self._scalars[key] = float(np.mean(values))
    self._means.clear()
    scalars = dict(self._scalars)
    self._scalars.clear()
    videos, self._videos = self._videos, {}
    if scalars:
      if self._jsonl is not None:
        record = {'step': step, **{k: v if math.isfinite(v) else None for k, v in scalars.items()}}
        self._append_line(json.dumps(record) + '\n')
      self._terminal(step, scalars)
    if self._writer is not None:
      import tensorflow as tf
      try:
        with self._writer.as_default():
          for key, value in scalars.items():
            tf.summary.scalar(key, value, step)
          for key, value in videos.items():
            _video_summary(key, value, step)
        self._writer.flush()
      except (OSError, tf.errors.OpError) as e:
        raise WriteError.of(self.logdir, e, 'TensorBoard events in') from e

  def _append_line(self, line: str) -> None:
    data = line.encode()
    start = os.lseek(self._jsonl, 0, os.SEEK_END)
    try:
      done = 0
      while done < len(data):  # A full disk may take part of the line, then fail.
        done += os.write(self._jsonl, data[done:])
    except OSError as e:
      try:
        os.ftruncate(self._jsonl, start)  # No half line for readers of the file.
      except OSError:
        pass
      raise WriteError.of(self._jsonl_path, e, 'metrics') from e

  def _terminal(self, step: int, scalars: dict) -> None:
    parts = [f'[{step:,} frames]']
    for key in TERMINAL_KEYS:
      if key in scalars:
        parts.append(f'{key} {_fmt(scalars[key])}')
    if self.total_frames and 'fps' in scalars and scalars['fps'] > 0:
      self._recent_fps.append(scalars['fps'])
      rate = float(np.median(self._recent_fps))
      parts.append(f'ETA {_duration((self.total_frames - step) / rate)}')
    print(' / '.join(parts), file=self.stream, flush=True)

  def close(self) -> None:
    if self._jsonl is not None:
      os.close(self._jsonl)
      self._jsonl = None
    if self._writer is not None:
      writer, self._writer = self._writer, None
      try:
        writer.close()
      except Exception as e:
        raise WriteError.of(self.logdir, e, 'TensorBoard events in') from e



def read_metrics(path: str | os.PathLike) -> tuple[list[tuple[int, dict]], list[int]]:
  """The rows of a metrics.jsonl as (line number, record), and the numbers of the lines that
  are not a JSON object (e.g. the half-written last line of a killed run). Raises OSError when
  the file cannot be read."""
  with open(path, errors='replace') as f:
    lines = f.read().splitlines()
  rows, bad = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict):
      rows.append((number, record))
    else:
      bad.append(number)
  return rows, bad

def _fmt(value: float) -> str:
  if not math.isfinite(value):
    return str(value)  # nan, inf, -inf
  if value == 0 or 1e-3 <= abs(value) < 1e5:
    return f'{value:.3f}'.rstrip('0').rstrip('.') if abs(value) < 100 else f'{value:.1f}'
  return f'{value:.2e}'


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  days, rest = divmod(seconds, 86400)
  hours, rest = divmod(rest, 3600)
  minutes = rest // 60
  return f'{days}d {hours}h' if days else f'{hours}h {minutes:02d}m'


def _video_summary(name: str, video: np.ndarray, step: int) -> None:
  """Writes a video as an animated GIF image summary, which TensorBoard plays."""
  import tensorflow as tf
  if np.issubdtype(video.dtype, np.floating):
    video = np.clip(255 * video, 0, 255).astype(np.uint8)
  T, H, W, C = video.shape
  try:
    gif = encode_gif(video)
  except ImportError:  # Without Pillow: the first frames as a plain image.
    tf.summary.image(name, video[:8], step, max_outputs=8)
    return
  summary = tf.compat.v1.Summary()
  image = tf.compat.v1.Summary.Image(height=H, width=W, colorspace=C)
  image.encoded_image_string = gif
  summary.value.add(tag=name, image=image)
  tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step)


def encode_gif(video: np.ndarray, fps: int = 16) -> bytes:
  """`[T, H, W, C]` uint8 frames to GIF bytes (needs Pillow)."""
  from PIL import Image
  frames = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in video]
  buffer = io.BytesIO()
  frames[0].save(buffer, format='GIF', save_all=True, append_images=frames[1:],
                 duration=int(1000 / fps), loop=0)
  return buffer.getvalue()


class Progress:
  """A one-line progress bar for long phases (prefill, evaluation) on a terminal stream."""

  def __init__(self, label: str, total: int, stream=None):
    self.label, self.total, self.stream = label, max(int(total), 1), stream or sys.stdout
    self._start, self._shown = time.time(), -1

  def update(self, done: int) -> None:
    percent = min(100, int(100 * done / self.total))
    if percent == self._shown:
      return
    self._shown = percent
    bar = '#' * (percent // 4) + '.' * (25 - percent // 4)
    rate = done / max(time.time() - self._start, 1e-6)
    end = '\n' if percent >= 100 else ''
    print(f'\r{self.label} [{bar}] {done:,}/{self.total:,} ({rate:.0f}/s)', end=end,
          file=self.stream, flush=True)

  def close(self) -> None:
    if self._shown < 100:
      print(file=self.stream, flush=True)
