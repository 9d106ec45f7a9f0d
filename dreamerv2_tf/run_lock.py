"""One process per logdir: a lock file that names its holder.

Two runs in one logdir (two terminals, a scheduler that requeues a job while the old one still
runs) would both resume from the same checkpoint and both write checkpoints, episodes and
metrics. The run holds `<workdir>/run.lock` (an exclusive `flock`, and the file says who holds
it: pid, host, start time, command); a second start fails with a one-line error naming that
process. The kernel releases a `flock` when its process dies, also by SIGKILL, so the lock of a
dead process is stale by construction: the next start takes it over and rewrites the file.
A clean exit removes the file. Each worker of a multi-worker run locks its own workdir.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys

from dreamerv2_tf.errors import RunError

NAME = 'run.lock'


class LogdirInUseError(RunError):
  """Another live process holds the lock of this workdir."""


class RunLock:
  """Exclusive use of `directory` by this process, as a context manager.

    with RunLock(logdir):
      ...  # train; a second RunLock(logdir) in any process raises LogdirInUseError
  """

  def __init__(self, directory: str | os.PathLike):
    self.path = pathlib.Path(directory) / NAME
    self._fd: int | None = None
    self.took_over: dict | None = None  # The stale holder's record, when there was one.

  def acquire(self) -> 'RunLock':
    from dreamerv2_tf.files import WriteError
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise WriteError.of(self.path.parent, e, 'logdir') from e
    while True:
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
      except OSError as e:
        raise WriteError.of(self.path, e, 'lock file') from e
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        holder = _read(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
          raise LogdirInUseError(_in_use(self.path.parent, holder)) from None
        raise WriteError.of(self.path, e, 'lock file') from e
      # The holder before us may have removed the file between our open and flock: then
      # we locked a file nobody else will find. Lock the file that is at the path now.
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    previous = _read(fd)
    self.took_over = previous or None
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'start': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'command': ' '.join(sys.argv)[:300]}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
    except OSError as e:
      os.close(fd)
      raise WriteError.of(self.path, e, 'lock file') from e
    self._fd = fd
    return self

  def release(self) -> None:
    """Removes the file, then drops the lock (in that order, see `acquire`)."""
    if self._fd is None:
      return
    try:
      self.path.unlink(missing_ok=True)
    finally:
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'RunLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _read(fd: int) -> dict:
  try:
    text = os.pread(fd, 4096, 0).decode(errors='replace')
    record = json.loads(text) if text.strip() else {}
    return record if isinstance(record, dict) else {}
  except (OSError, ValueError):
    return {}


def _in_use(directory: pathlib.Path, holder: dict) -> str:
  who = (f'process {holder.get("pid", "?")} on host {holder.get("host", "?")} (started '
         f'{holder.get("start", "?")}: {holder.get("command", "?")})') if holder else \
      'another process'
  return (f'logdir {str(directory)!r} is in use by {who}; stop that run first, or use '
          'another --logdir')
