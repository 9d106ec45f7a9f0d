"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""
from __future__ import annotations

import os
import tempfile


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it over `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())  # The data is on disk before the rename makes it visible.
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; keep the usual mode.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


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
