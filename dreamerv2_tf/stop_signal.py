"""Ctrl-C and SIGTERM as a flag the training loop polls, so a run saves before it stops."""
from __future__ import annotations

import signal
import sys


class StopSignal:
  """Turns SIGINT/SIGTERM into a flag the loop polls, so it can checkpoint before exiting."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.received is not None:  # A second signal: stop at once.
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    print(f'\n{self.received} received: saving a checkpoint, then stopping '
          '(send it again to stop at once)', file=sys.stderr, flush=True)

  def __call__(self) -> bool:
    return self.received is not None

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
