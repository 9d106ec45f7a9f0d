"""The start banner's estimate on a CPU: how long the configured run takes at the measured rate.

A paper run (`--configs atari`, 5e7 agent steps) takes months on a CPU; a newcomer who starts one
should learn that in the first minute, with the command that shows learning in minutes instead.
The rate is measured from the end of the first update, so that tracing the train step is left
out: agent steps per second of wall time, which includes acting, the env and the replay as well
as the train step. `update` is called after each update returns:

    update calls:  1 (after tracing)   2 ...   1+measure_updates (and >= min_seconds later)
    clock:         start                       stop: steps/s = (step - start step) / (stop - start)
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from dreamerv2_tf.cli_help import QUICK_COMMAND

# An estimate above this gets the quick command: a run that long is not a first try.
LONG_RUN_SECONDS = 3600.0


def duration(seconds: float) -> str:
  """'about 40 seconds', 'about 12 minutes', 'about 5.3 hours', 'about 122 days'."""
  for unit, size in (('days', 86400), ('hours', 3600), ('minutes', 60)):
    if seconds >= 2 * size:
      value = seconds / size
      return f'about {value:.1f} {unit}' if value < 10 else f'about {value:,.0f} {unit}'
  return f'about {max(seconds, 0):.0f} seconds'


class RunEstimate:
  """Call `update(step)` after every update of the loop; prints the estimate once, on a CPU.

  total_steps: the run's length in agent steps (`steps`); action_repeat converts to frames.
  cpu: whether training runs on a CPU only (no estimate otherwise: the terminal's ETA suffices).
  measure_updates / min_seconds: the estimate waits for both, after the traced first update.
  """

  def __init__(self, total_steps: float, action_repeat: int, cpu: bool,
               measure_updates: int = 5, min_seconds: float = 2.0,
               stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter):
    self.total_steps, self.action_repeat, self.cpu = float(total_steps), action_repeat, cpu
    self.measure_updates, self.min_seconds = measure_updates, min_seconds
    self.stream, self.clock = stream or sys.stdout, clock
    self.updates, self.start, self.done = 0, None, not cpu

  def update(self, step: int) -> None:
    if self.done:
      return
    self.updates += 1
    if self.updates == 1:  # Called after the first update, which traced the train step.
      self.start = (self.clock(), step)
      return
    if self.updates < 1 + self.measure_updates:
      return
    seconds, steps = self.clock() - self.start[0], step - self.start[1]
    if seconds < self.min_seconds or steps <= 0:
      return
    self.done = True
    print(self.message(steps / seconds, step), file=self.stream, flush=True)

  def message(self, rate: float, step: int) -> str:
    """The banner's lines for a measured rate in agent steps per second."""
    remaining = max(self.total_steps - step, 0) / rate
    frames = self.total_steps * self.action_repeat
    text = (f'CPU estimate: this run ({self.total_steps:,.0f} agent steps = '
            f'{frames:,.0f} frames) finishes in {duration(remaining)} at the measured '
            f'{rate * self.action_repeat:,.1f} frames/s.')
    if remaining > LONG_RUN_SECONDS:
      text += ('\nThat is expected without a GPU (the paper trained on one). To see the agent '
               f'learn in minutes on this CPU, run:\n  {QUICK_COMMAND}')
    return text
