"""The errors a user sees as one line: bad input (ConfigError) and a run that cannot go on
(RunError), and the CLI wrapper that prints them without a traceback. Free of TensorFlow."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar('_T')


class ConfigError(ValueError):
  """Bad configuration input; the message is one line naming the key and what is allowed."""


class RunError(RuntimeError):
  """A run that cannot go on (diverged, bad env data, logdir in use, a failed write); the
  message is one line saying what happened and what to do (see docs/failures.md)."""


def short(value: Any) -> str:
  """`value` for a one-line message: its repr, at most 80 characters."""
  text = repr(value)  # repr escapes newlines, which keeps messages on one line
  return text if len(text) <= 80 else text[:77] + '...'


def main_guard(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
  """Run a CLI entry point, fn(*args, **kwargs); a ConfigError becomes `error: <message>` on
  stderr and exit status 2 (a RunError: status 1), without a traceback."""
  try:
    return fn(*args, **kwargs)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    raise SystemExit(2) from None
  except RunError as e:
    print(f'error: {e}', file=sys.stderr)
    raise SystemExit(1) from None
