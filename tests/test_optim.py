"""The optimizer's step against the paper's Adam written out in numpy: weight decay, clipping,
bias-corrected moments, the skip of a non-finite step."""
import keras
import numpy as np
import tensorflow as tf

from dreamerv2_tf.optim import Optimizer


def paper_adam(w, grads, lr, eps, clip, wd, b1=0.9, b2=0.999):
  """The paper's update per step: clip by global norm, `w *= 1 - wd`, then Adam (TF's
  ResourceApplyAdam, 1 - beta in float32 as the paper's Adam computes it)."""
  w = [x.astype(np.float64) for x in w]
  m = [np.zeros_like(x) for x in w]
  v = [np.zeros_like(x) for x in w]
  one_minus_b2 = float(np.float32(1) - np.float32(b2))
  for t, g in enumerate(grads, 1):
    norm = np.sqrt(sum((x.astype(np.float64) ** 2).sum() for x in g))
    g = [x * min(1.0, clip / norm) for x in g]
    for i in range(len(w)):
      w[i] *= 1 - wd
      m[i] += (g[i] - m[i]) * (1 - b1)
      v[i] += (g[i] ** 2 - v[i]) * one_minus_b2
      lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
      w[i] -= lr_t * m[i] / (np.sqrt(v[i]) + eps)
  return w, m, v


def test_steps_match_the_papers_adam_with_weight_decay_and_clipping():
  keras.utils.set_random_seed(0)
  layer = keras.layers.Dense(3)
  layer.build((None, 4))
  start = [x.numpy().copy() for x in layer.trainable_variables]
  # A large weight decay and a clip the gradients exceed, so each of them shows in the weights.
  opt = Optimizer('tiny', lr=0.01, eps=1e-5, clip=0.5, wd=0.05,
                  variables=layer.trainable_variables)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x) ** 2)
    return opt(tape, loss)

  inputs = [np.random.default_rng(i).normal(size=(5, 4)).astype(np.float32) for i in range(3)]
  grads = []
  for x in inputs:
    # The gradient the step sees, at the weights before it.
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x) ** 2)
    grads.append([g.numpy() for g in tape.gradient(loss, layer.trainable_variables)])
    metrics = step(tf.constant(x))
    assert metrics['tiny_grad_norm'] > 0.5  # Clipped.
  w, m, v = paper_adam(start, grads, lr=0.01, eps=1e-5, clip=0.5, wd=0.05)
  adam = opt.opt
  for i, var in enumerate(layer.trainable_variables):
    index = adam._get_variable_index(var)
    np.testing.assert_allclose(var.numpy(), w[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adam._momentums[index].numpy(), m[i], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(adam._velocities[index].numpy(), v[i], rtol=1e-4, atol=1e-9)
  assert int(adam.iterations.numpy()) == 3
  # A non-finite step changes nothing, not even the step counter, and is counted.
  before = [x.numpy().copy() for x in layer.trainable_variables]
  step(tf.constant(np.full((5, 4), np.nan, np.float32)))
  assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, layer.trainable_variables))
  assert int(adam.iterations.numpy()) == 3 and int(opt.skipped.numpy()) == 1
