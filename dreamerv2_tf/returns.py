"""Return math of the actor-critic: lambda-returns, discount weights, reward normalisation.

All sequences here are time-major `[T, ...]`, as imagination is.
"""
from __future__ import annotations

import tensorflow as tf

from dreamerv2_tf import distribute


def lambda_return(reward: tf.Tensor, value: tf.Tensor, discount: tf.Tensor,
                  bootstrap: tf.Tensor, lambda_: float) -> tf.Tensor:
  """TD(lambda) targets, computed backwards in time (DreamerV2 Eq. 4).

    V_t = r_t + d_t * ((1 - lambda) * v_{t+1} + lambda * V_{t+1}),   V_T = bootstrap

  reward, value, discount: `[T, ...]`; bootstrap: `[...]` (the value after the last step).
  lambda_=1 gives discounted Monte Carlo returns, lambda_=0 one-step TD targets.
  """
  next_values = tf.concat([value[1:], bootstrap[None]], 0)
  inputs = reward + discount * next_values * (1 - lambda_)
  returns, last = [], bootstrap
  for t in reversed(range(reward.shape[0])):
    last = inputs[t] + discount[t] * lambda_ * last
    returns.append(last)
  return tf.stack(returns[::-1], 0)


def discount_weights(discount: tf.Tensor) -> tf.Tensor:
  """Weights of imagined steps: w_0 = 1, w_t = prod_{i<t} d_i.

  A predicted discount d_t says whether the state *after* t exists, so it weights step t+1,
  not step t: the weights are the cumulative product shifted by one.
  """
  return tf.math.cumprod(tf.concat([tf.ones_like(discount[:1]), discount[:-1]], 0), 0)


class StreamNorm(tf.Module):
  """Divides rewards by a running mean of their magnitude (the paper's `reward_norm`).

  With momentum 1 (the paper's setting) the magnitude stays 1 and rewards pass unchanged.
  """

  def __init__(self, momentum: float = 0.99, scale: float = 1.0, eps: float = 1e-8):
    super().__init__()
    self._momentum, self._scale, self._eps = momentum, scale, eps
    self.mag = tf.Variable(1.0, trainable=False, dtype=tf.float64)

  def __call__(self, inputs: tf.Tensor) -> tuple[tf.Tensor, dict]:
    # The batch statistic is the global batch's: replicas average theirs (equal shares). It is a
    # constant to gradients, as in the paper's code (which reads it back from its variable):
    # with momentum < 1 the actor's dynamics gradient would otherwise also flow through it.
    mag = tf.stop_gradient(tf.reduce_mean(tf.abs(inputs)))
    mag = distribute.all_mean(tf.cast(mag, tf.float64))
    mag = self._momentum * self.mag + (1 - self._momentum) * mag
    # A non-finite batch (its update is skipped, see optim.py) leaves the statistic as it was.
    mag = tf.where(tf.math.is_finite(mag), mag, self.mag)
    distribute.cross_replica(self.mag.assign, mag)
    outputs = inputs / (tf.cast(mag, inputs.dtype) + self._eps) * self._scale
    metrics = {'reward_mean': tf.reduce_mean(inputs), 'reward_std': tf.math.reduce_std(inputs),
               'reward_normed_mean': tf.reduce_mean(outputs),
               'reward_normed_std': tf.math.reduce_std(outputs)}
    return outputs, metrics
