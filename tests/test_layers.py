"""Dense and convolution layers whose bias gradient is summed in float32 (see layers.py)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf import layers

CASES = {
    # name: (our layer, Keras' layer, constructor args, input shape)
    'dense': (layers.Dense, keras.layers.Dense, (48,), (12000, 16)),
    'conv': (layers.Conv2D, keras.layers.Conv2D, (48, 4, 2), (50, 34, 34, 8)),
    'deconv': (layers.Conv2DTranspose, keras.layers.Conv2DTranspose, (48, 6, 2), (50, 13, 13, 8)),
}


def pair(name, dtype):
  ours, theirs, args, shape = CASES[name]
  a, b = ours(*args, dtype=dtype), theirs(*args, dtype=dtype)
  a.build(shape), b.build(shape)
  for src, dst in zip(a.weights, b.weights):
    dst.assign(src)
  return a, b, shape


def bias_gradient(layer, x, dy):
  with tf.GradientTape() as tape:
    y = layer(x)
  return tape.gradient(y, layer.bias, output_gradients=tf.cast(dy, y.dtype)).numpy()


@pytest.mark.parametrize('name', CASES)
def test_bias_gradient_under_bfloat16_is_the_float32_sum(name):
  ours, theirs, shape = pair(name, 'mixed_bfloat16')
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=shape), tf.float32)
  out_shape = ours(x).shape
  # Small terms with a common offset, as a loss gradient summed over many rows has.
  dy = (rng.normal(size=out_shape) * 0.01 + 0.003).astype(np.float32)
  exact = tf.cast(tf.cast(dy, tf.bfloat16), tf.float64).numpy()
  exact = exact.reshape(-1, out_shape[-1]).sum(0)
  rel = lambda g: np.linalg.norm(g - exact) / np.linalg.norm(exact)
  # The sum is exact but reaches the variable as bfloat16 (Keras casts the variable's read):
  # one rounding of the result, at most 2^-9 relative.
  assert rel(bias_gradient(ours, x, dy)) < 4e-3
  # Keras' own layer (BiasAddGrad, summed in bfloat16) is what this guards against.
  assert rel(bias_gradient(theirs, x, dy)) > 0.2


def test_bias_gradient_over_millions_of_rows_of_one_sign_is_the_exact_sum():
  # The decoder's last bias at the dmc_vision preset sums 800 images x 64 x 64 terms per
  # channel, mostly of one sign early in training. One reduce_sum over them lost 7e-5 here
  # (8e-4 on a real walker batch, where the paper's code came within 4e-6 of float64).
  rng = np.random.default_rng(0)
  dy = tf.constant(rng.normal(0.3, 0.2, size=[800, 64, 64, 3]), tf.float32)
  bias = tf.Variable(tf.zeros([3]))
  with tf.GradientTape() as tape:
    y = layers.add_bias(tf.zeros_like(dy), bias)
  grad = tape.gradient(y, bias, output_gradients=dy).numpy()
  exact = dy.numpy().astype(np.float64).sum((0, 1, 2))
  assert np.max(np.abs(grad - exact) / np.abs(exact)) < 2e-6


@pytest.mark.parametrize('dtype', ['float32', 'mixed_bfloat16'])
@pytest.mark.parametrize('name', CASES)
def test_same_outputs_and_gradients_as_keras(name, dtype):
  ours, theirs, shape = pair(name, dtype)
  x = tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)
  grads = []
  for layer in (ours, theirs):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_mean(tf.cast(y, tf.float32) ** 2)
    grads.append((y, *tape.gradient(loss, [x, layer.kernel])))
  for a, b in zip(*grads):
    a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
    tol = 1e-5 if dtype == 'float32' else 1e-2
    assert np.abs(a - b).max() <= tol * np.abs(b).max()


def test_activation_is_refused():
  with pytest.raises(ValueError, match='takes no activation'):
    layers.Dense(4, activation='relu')
