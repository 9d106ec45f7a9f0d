"""Training noise as a pure function of (seed, update, draw, row of the global batch).

The train step samples latents (straight-through one-hot or Gaussian) and imagined actions.
Drawing that noise from counter-based stateless generators, over the *global* batch and then
taking this replica's rows, makes a data-parallel step on N replicas sample exactly what the
single-device step samples on the same batch, and makes runs reproducible from a checkpoint.
Generating the global rows costs N times the noise of one replica, which is small next to the
networks (about 12M uniforms per atari-preset step).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from dreamerv2_tf import distribute

# Named rather than auto-selected, so every device runs the same generator. (XLA's Philox
# kernel still maps keys to other streams than TensorFlow's: a run with `xla` samples different,
# equally distributed, values; tests compare the two paths with fixed noise.)
ALG = 'philox'


class Noise:
  """Draws for one train step; every call to `uniform`/`normal` uses a fresh sub-seed.

  The calls happen in program order while the step is traced, so draw k of update u is the
  same tensor in every replica and on every strategy.
  """

  def __init__(self, seed: int, update: tf.Tensor):
    self._seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(update, tf.int64)])
    self._draws = 0

  def _next_seed(self) -> tf.Tensor:
    self._draws += 1
    return tf.random.experimental.stateless_fold_in(self._seed, self._draws, alg=ALG)

  def _rows(self, fn, shape: Sequence) -> tf.Tensor:
    # Rows are the leading dim: this replica's rows of the global batch, which are contiguous
    # for batch-major data and for time-major data flattened as [B * T].
    index, count = distribute.replica_info()
    seed = self._next_seed()
    if count == 1:
      return fn(shape, seed)
    rows = shape[0]
    full = fn([rows * count, *shape[1:]], seed)
    return full[index * rows:(index + 1) * rows]

  def uniform(self, shape: Sequence) -> tf.Tensor:
    """float32 uniform in [0, 1) of `shape` (`shape[0]` = this replica's rows)."""
    return self._rows(lambda s, seed: tf.random.stateless_uniform(
        s, seed, dtype=tf.float32, alg=ALG), shape)

  def normal(self, shape: Sequence) -> tf.Tensor:
    """float32 standard normal of `shape` (`shape[0]` = this replica's rows)."""
    return self._rows(lambda s, seed: tf.random.stateless_normal(
        s, seed, dtype=tf.float32, alg=ALG), shape)

  def steps(self, count: int, shape: Sequence) -> tf.Tensor:
    """Uniform draws for `count` steps of a loop, time-major `[count, *shape]`.

    One draw for the whole loop, so a loop traced once (tf.scan, for XLA) and a Python-unrolled
    loop sample the same values; `shape[0]` is this replica's rows.
    """
    u = self.uniform([shape[0], count, *shape[1:]])  # Rows first: replicas slice rows.
    return tf.transpose(u, [1, 0] + list(range(2, len(shape) + 1)))


class StepNoise:
  """One step's noise, drawn beforehand by `Noise.steps`; `normal` is its inverse normal CDF."""

  def __init__(self, u: tf.Tensor):
    self._u = u

  def uniform(self, shape: Sequence) -> tf.Tensor:
    del shape  # Drawn in the caller's shape.
    return self._u

  def normal(self, shape: Sequence) -> tf.Tensor:
    del shape
    return tf.math.ndtri(tf.clip_by_value(self._u, 1e-7, 1 - 1e-7))
