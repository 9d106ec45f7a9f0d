"""When the loop trains, logs and evaluates: periods counted in agent steps.

Training and logging restart their periods when a run resumes, as the paper's code does (a
shift of a few steps). Evaluations do not: in the paper's code a resumed run evaluates at once
and counts the next evaluation from there, so every stop adds a point to the curve and moves
the later ones. Here the step of the last finished evaluation is saved with each checkpoint,
and a resumed run evaluates where the run would have without the stop (E: eval_every):

  not stopped  eval@P ------ E ------ eval@P+E ------ E ------ eval@P+2E
  stopped      eval@P ------ E ------ eval@P+E ---- stop@S     (checkpoint: evaluated P+E)
  resumed                                          S -------- eval@P+2E    (not also at S)

A run stopped during an evaluation does that evaluation again when it resumes.
"""
from __future__ import annotations

import os

from dreamerv2_tf.logger import read_metrics


class Every:
  """True once every `every` steps (never for every <= 0)."""

  def __init__(self, every: float):
    self.every, self.last = int(every), None

  def __call__(self, step: int) -> bool:
    if self.every <= 0:
      return False
    if self.last is None:
      self.last = step
      return True
    if step >= self.last + self.every:
      self.last += (step - self.last) // self.every * self.every
      return True
    return False


class EvalSchedule:
  """Evaluations at the first check (a fresh run's prefill end), then every `every` agent
  steps after the last finished one; none for every <= 0.

  `evaluated` (a checkpointed int64 variable) holds the agent step of the last finished
  evaluation, -1 before the first.
  """

  def __init__(self, every: float):
    import tensorflow as tf  # Here: importing the loop (for --help) stays fast.
    self.every = int(every)
    self.evaluated = tf.Variable(-1, dtype=tf.int64, trainable=False, name='evaluated')

  @property
  def last(self) -> int | None:
    """The agent step of the last finished evaluation; None before the first."""
    last = int(self.evaluated)
    return None if last < 0 else last

  def due(self, step: int) -> bool:
    last = self.last
    return self.every > 0 and (last is None or step >= last + self.every)

  def done(self, step: int) -> None:
    """Records a finished evaluation at `step`."""
    self.evaluated.assign(int(step))

  def steps_to_next(self, step: int) -> int | None:
    """Agent steps from `step` until the next evaluation is due; None if there is none."""
    if self.every <= 0:
      return None
    last = self.last
    return 0 if last is None else max(last + self.every - step, 0)

  def recover(self, logged: list[int], step: int) -> int | None:
    """For a checkpoint at agent step `step` written before `evaluated` was saved: takes the
    last of the `logged` evaluations (`logged_evaluations`) at or before `step`; returns its
    step, or None (then the resumed run evaluates at once, as the paper's code does)."""
    last = max((s for s in logged if s <= step), default=None)
    if last is not None:
      self.done(last)
    return last


def logged_evaluations(metrics: str | os.PathLike, action_repeat: int) -> list[int]:
  """Agent steps of the evaluations that a run's metrics.jsonl logged (rows with an
  `eval_return`, null included: an evaluation whose returns were not finite)."""
  try:
    rows, _ = read_metrics(metrics)
  except OSError:
    return []
  steps = []
  for _, record in rows:
    if 'eval_return' in record and isinstance(record.get('step'), (int, float)):
      steps.append(int(record['step']) // action_repeat)
  return steps
