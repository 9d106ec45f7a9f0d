"""Optimizer as in the paper's code: Adam, global-norm clipping, weight decay, loss scaling."""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from dreamerv2_tf import distribute


class Optimizer(tf.Module):
  """Adam with gradient clipping by global norm and weight decay `var *= 1 - wd` per step.

  In every precision a step whose loss or gradients are not finite is skipped: no weight, slot
  or Adam step counter changes, `skipped` counts it and the metric `<name>_skipped_steps` is 1
  for that step (the loop sums it per log period and stops a run that skips too many in a
  row). With `loss_scale=True` (the mixed_float16 path) the loss is scaled dynamically before
  differentiation: gradients are unscaled, a skipped step halves the scale, and the scale
  doubles after 2000 finite steps in a row.

  Under a tf.distribute strategy, call it in replica context with the replica's local mean loss:
  the gradients are averaged over replicas before clipping, so the clip sees the global-batch
  gradient and every replica applies the single-device update. The skip-or-apply decision is
  taken from all-reduced values, so the replicas always take it together.
  """

  def __init__(self, name: str, lr: float, eps: float = 1e-5, clip: float | None = None,
               wd: float | None = None, opt: str = 'adam', loss_scale: bool = False,
               variables: Sequence | None = None):
    super().__init__(name=name)
    if opt != 'adam':
      raise ValueError(f'unknown optimizer {opt!r}; allowed: adam')
    self._name = name
    self._clip = clip
    self._wd = wd
    # Keras' Adam holds the state (step counter, learning rate, first and second moments) and
    # names it in checkpoints; the step itself is `_update`'s: see there.
    self.opt = keras.optimizers.Adam(learning_rate=lr, epsilon=eps, name=name)
    self._loss_scale = loss_scale
    self.skipped = tf.Variable(0, trainable=False, dtype=tf.int64)  # Steps skipped so far.
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
      replicas = distribute.num_replicas()
      # A replica differentiates its share of the global loss (its local mean / replicas), so
      # the float16 gradients inside the networks keep their single-device size: a local mean
      # over 1/R of the batch would make them R times larger and overflow sooner.
      with tape:  # The scaling must be recorded by the tape that recorded the loss.
        scaled = loss * (self.scale / replicas)
      grads = tape.gradient(scaled, variables)
      grads = [g * (replicas / self.scale) for g in grads]
    else:
      grads = tape.gradient(loss, variables)
    # One all-reduce for both: the decision below needs the loss of every replica.
    grads, mean_loss = distribute.all_mean((grads, tf.cast(loss, tf.float32)))
    norm = tf.linalg.global_norm(grads)
    if self._clip:
      grads, _ = tf.clip_by_global_norm(grads, self._clip, norm)
    metrics[f'{self._name}_grad_norm'] = norm
    # Equal on all replicas (all-reduced), so they skip or apply together. A NaN or Inf
    # gradient anywhere makes the global norm non-finite.
    finite = tf.math.is_finite(norm) & tf.math.is_finite(mean_loss)
    distribute.cross_replica_cond(
        finite, lambda strategy, *g: self._update(strategy, g, variables), grads)
    distribute.cross_replica(self._count_skip, finite)
    metrics[f'{self._name}_skipped_steps'] = 1.0 - tf.cast(finite, tf.float32)
    if self._loss_scale:
      distribute.cross_replica(self._update_scale, finite)
      metrics[f'{self._name}_loss_scale'] = self.scale.value()
    return metrics

  def _update(self, strategy: tf.distribute.Strategy, grads, variables) -> None:
    """One step of the paper's Adam, in cross-replica context: `var *= 1 - wd`, then TF's
    fused Adam kernel (the one the paper's Adam, Keras 2's OptimizerV2, runs) on each variable
    and its moments, on every device that holds a copy; then the step counter.

    Keras 3's own `apply` builds the same step from ~20 ops per variable: a quarter of a
    debug train step's graph and of its trace time (docs/performance.md).
    """
    opt = self.opt
    step = tf.cast(opt.iterations + 1, tf.float32)
    beta1, beta2 = tf.constant(opt.beta_1, tf.float32), tf.constant(opt.beta_2, tf.float32)
    # The scalars, once per step: beta powers, lr, beta1, beta2, epsilon, 1 - wd.
    scalars = (beta1 ** step, beta2 ** step, tf.cast(opt.learning_rate, tf.float32), beta1,
               beta2, tf.constant(opt.epsilon, tf.float32), tf.constant(1 - (self._wd or 0.0)))
    for grad, var in zip(grads, variables):
      index = opt._get_variable_index(var)  # Keras 3's slot lookup (its own Adam uses it).
      moments = (opt._momentums[index], opt._velocities[index])
      var, m, v = (x.value if isinstance(x, keras.Variable) else x for x in (var, *moments))
      strategy.extended.update(var, self._adam, args=(m, v, grad, *scalars), group=False)
    opt.iterations.assign_add(1)

  def _adam(self, var, m, v, grad, beta1_power, beta2_power, lr, beta1, beta2, epsilon, keep):
    if var.dtype != tf.float32:
      raise TypeError(f'Adam keeps float32 weights; {var.name} is {var.dtype.name}')
    if self._wd:
      var.assign(var * keep)
    tf.raw_ops.ResourceApplyAdam(
        var=var.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
        beta2_power=beta2_power, lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon,
        grad=tf.cast(grad, tf.float32))

  def _count_skip(self, finite):
    self.skipped.assign_add(1 - tf.cast(finite, tf.int64))

  def _update_scale(self, finite):
    grow = tf.logical_and(finite, self.good_steps >= 1999)
    new_scale = tf.where(grow, self.scale * 2, tf.where(finite, self.scale, self.scale / 2))
    self.scale.assign(tf.maximum(new_scale, 1.0))
    self.good_steps.assign(tf.where(finite & ~grow, self.good_steps + 1, tf.zeros_like(self.good_steps)))
