"""Optimizer as in the paper's code: Adam, global-norm clipping, weight decay, loss scaling."""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


class Optimizer(tf.Module):
  """Adam with gradient clipping by global norm and weight decay `var *= 1 - wd` per step.

  With `loss_scale=True` (the mixed_float16 path) the loss is scaled dynamically before
  differentiation: gradients are unscaled, a step with non-finite gradients is skipped and the
  scale halved, and the scale doubles after 2000 finite steps in a row.
  """

  def __init__(self, name: str, lr: float, eps: float = 1e-5, clip: float | None = None,
               wd: float | None = None, opt: str = 'adam', loss_scale: bool = False,
               variables: Sequence | None = None):
    super().__init__(name=name)
    if opt != 'adam':
      raise ValueError(f'unknown optimizer {opt!r}; allowed: adam')
    self._name = name
    self._clip, self._wd = clip, wd
    self.opt = keras.optimizers.Adam(learning_rate=lr, epsilon=eps, name=name)
    self._loss_scale = loss_scale
    if loss_scale:
      self.scale = tf.Variable(2.0 ** 15, trainable=False, dtype=tf.float32)
      self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)
    self.variables_ = list(variables) if variables is not None else None
    if self.variables_ is not None:
      self.opt.build(self.variables_)  # Slots exist before the first step or restore.

  def __call__(self, tape: tf.GradientTape, loss: tf.Tensor, variables=None) -> dict:
    """Differentiates `loss` (recorded on `tape`) and applies one update. Returns metrics."""
    variables = self.variables_ if variables is None else variables
    metrics = {f'{self._name}_loss': loss}
    if self._loss_scale:
      with tape:  # The scaling must be recorded by the tape that recorded the loss.
        scaled = loss * self.scale
      grads = tape.gradient(scaled, variables)
      grads = [g / self.scale for g in grads]
    else:
      grads = tape.gradient(loss, variables)
    norm = tf.linalg.global_norm(grads)
    if self._clip:
      grads, _ = tf.clip_by_global_norm(grads, self._clip, norm)
    metrics[f'{self._name}_grad_norm'] = norm
    if not self._loss_scale:
      self._apply(grads, variables)
      return metrics
    finite = tf.math.is_finite(norm)
    tf.cond(finite, lambda: self._apply(grads, variables), lambda: tf.no_op())
    self._update_scale(finite)
    metrics[f'{self._name}_loss_scale'] = self.scale.value()
    return metrics

  def _apply(self, grads, variables):
    if self._wd:
      for var in variables:
        var.assign(var * (1 - self._wd))
    self.opt.apply(grads, variables)
    return tf.no_op()

  def _update_scale(self, finite):
    grow = tf.logical_and(finite, self.good_steps >= 1999)
    new_scale = tf.where(grow, self.scale * 2, tf.where(finite, self.scale, self.scale / 2))
    self.scale.assign(tf.maximum(new_scale, 1.0))
    self.good_steps.assign(tf.where(finite & ~grow, self.good_steps + 1, tf.zeros_like(self.good_steps)))
