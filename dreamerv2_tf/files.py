"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

A write that fails (disk full, unwritable logdir) raises `WriteError`, one line naming the
path and the cause; whatever was on disk before stays readable.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from typing import Any, BinaryIO, Callable

from dreamerv2_tf.errors import RunError


class WriteError(RunError, OSError):
  """A checkpoint, episode, metrics or config file could not be written (an OSError too)."""

  @classmethod
  def of(cls, path: str | os.PathLike, error: BaseException, what: str = 'file') -> 'WriteError':
    """From the OSError (or TensorFlow error) of a failed write of `what` to `path`."""
    cause = getattr(error, 'strerror', None) or _tf_cause(str(getattr(error, 'message', '') or error))
    cause = ' '.join(cause.split())[:200]  # One line.
    code = getattr(error, 'errno', None)
    if code == errno.ENOSPC or 'No space left' in cause:
      todo = 'free space on that disk'
    elif code == errno.EFBIG or 'File too large' in cause:
      todo = 'raise the file size limit (ulimit -f)'
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or 'ermission denied' in cause:
      todo = 'make the logdir writable'
    else:
      todo = 'fix the cause'
    return cls(f'could not write the {what} {os.fspath(path)}: {cause}; what was written '
               f'before is intact: {todo}, then rerun the same command to resume')


def _tf_cause(message: str) -> str:
  """The OS's words in a TensorFlow error: '{{function_node ...}} path; No space left on device
  [Op:SaveV2]' -> 'No space left on device'."""
  message = re.sub(r'\{\{.*?\}\}|\s*\[Op:\w+\]\s*$', '', message).strip()
  return message.rsplit('; ', 1)[-1] if '; ' in message else message


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any],
                 what: str = 'file') -> None:
  """Calls `write` on a hidden temporary file beside `path`, then renames it over `path`.

  The temporary name (`.<name>.<random>.tmp`) matches no `*.npz` or `*.yaml` glob, so readers
  never see a half-written file; it is deleted when the write fails.
  """
  folder, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())  # The data is on disk before the rename makes it visible.
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; keep the usual mode.
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise WriteError.of(path, e, what) from e
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically; see `write_atomic`."""
  write_atomic(path, lambda f: f.write(text.encode('utf-8')))


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def print_json(result: dict, out: str = '') -> None:
  """Prints a result as indented JSON on stdout and, given `out`, also writes it there atomically."""
  import json
  text = json.dumps(result, indent=2)
  print(text)
  if out:
    write_text_atomic(out, text + '\n')
