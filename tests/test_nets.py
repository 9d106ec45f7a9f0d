"""Network building blocks against reference computations."""
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf import conv, layers


def test_decoder_dense_first_deconv_matches_transposed_conv():
  # The first transposed convolution runs as a matmul; it must equal Keras' own layer on a 1x1
  # map, in value and in gradient, or checkpoints and the paper's network would disagree.
  dec = conv.Decoder({'image': (64, 64, 3)}, 40, cnn_depth=4, dtype='float32')
  layer = dec.convs[0]
  x = tf.random.normal([5, 1, 1, 32 * 4], seed=1)
  with tf.GradientTape(persistent=True) as tape:
    ours = layer(x)
    ref = layers.Conv2DTranspose.call(layer, x)  # The plain transposed convolution.
  assert ours.shape == ref.shape == (5, 5, 5, 4 * 4)
  np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
  for a, b in zip(tape.gradient(ours, layer.trainable_variables),
                  tape.gradient(ref, layer.trainable_variables)):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('n,k,cin,cout', [(13, 6, 8, 1), (5, 5, 6, 3), (2, 4, 3, 2), (1, 3, 2, 5)])
def test_subpixel_deconv_matches_conv2d_transpose(n, k, cin, cout):
  # Odd and even kernels, several output channels: value and both gradients equal TF's own
  # stride-2 VALID transposed convolution.
  x = tf.random.normal([3, n, n, cin], seed=2)
  kernel = tf.random.normal([k, k, cout, cin], seed=3)
  size = 2 * (n - 1) + k
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x, kernel])
    ours = conv.subpixel_deconv(x, kernel)
    ref = tf.nn.conv2d_transpose(x, kernel, [3, size, size, cout], 2, 'VALID')
    weights = tf.random.normal(ref.shape, seed=4)  # A loss with distinct output gradients.
    loss_ours, loss_ref = tf.reduce_sum(ours * weights), tf.reduce_sum(ref * weights)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
  for a, b in zip(tape.gradient(loss_ours, [x, kernel]), tape.gradient(loss_ref, [x, kernel])):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('dtype,tol', [('float32', 1e-4), ('mixed_bfloat16', 5e-2)])
def test_fast_decoder_equals_keras_layers(dtype, tol):
  # The same weights through fast_deconv on and off: same image means and weight gradients.
  fast = conv.Decoder({'image': (64, 64, 1)}, 40, cnn_depth=4, dtype=dtype)
  plain = conv.Decoder({'image': (64, 64, 1)}, 40, cnn_depth=4, dtype=dtype, fast_deconv=False)
  for a, b in zip(fast.variables, plain.variables):
    b.assign(a)
  feat = tf.random.normal([2, 3, 40], seed=5)
  target = tf.random.uniform([2, 3, 64, 64, 1], -0.5, 0.5, seed=6)
  outs, grads = [], []
  for dec in (fast, plain):
    with tf.GradientTape() as tape:
      dist = dec(feat)['image']
      loss = -tf.reduce_mean(dist.log_prob(target))
    assert dist.mode().shape == (2, 3, 64, 64, 1) and dist.mode().dtype == tf.float32
    outs.append(dist.mode().numpy())
    grads.append(tape.gradient(loss, dec.trainable_variables))
  scale = np.abs(outs[1]).max()
  np.testing.assert_allclose(outs[0], outs[1], atol=tol * scale)
  for a, b in zip(*grads):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=tol * (np.abs(b.numpy()).max() + 1e-6))


def _encoder_outputs(enc, image, weights):
  with tf.GradientTape() as tape:
    tape.watch(image)
    embed = tf.cast(enc({'image': image}), tf.float32)
    loss = tf.reduce_sum(weights * embed)
  return [embed.numpy()] + [g.numpy() for g in tape.gradient(loss, [image, *enc.variables])]


def test_fast_encoder_equals_keras_layers():
  # The same weights through fast_conv on and off: the same embedding and gradients in float32,
  # and in bfloat16 no further from float32 than Keras' own layers are. The atari encoder's
  # last layer has a 2x2 output, so it runs as a patch matmul.
  shapes = {'image': (64, 64, 1)}
  reference = conv.Encoder(shapes, cnn_depth=4, dtype='float32', fast_conv=False)
  image = tf.random.uniform([2, 3, 64, 64, 1], -0.5, 0.5, seed=7)
  weights = tf.random.normal([2, 3, reference.embed_size], seed=8)
  assert reference({'image': image}).shape == (2, 3, 2 * 2 * 32)
  want = _encoder_outputs(reference, image, weights)
  for dtype in ('float32', 'mixed_bfloat16'):
    errors = {}
    for fast in (True, False):
      enc = conv.Encoder(shapes, cnn_depth=4, dtype=dtype, fast_conv=fast)
      for a, b in zip(enc.variables, reference.variables):
        a.assign(b)
      got = _encoder_outputs(enc, image, weights)
      errors[fast] = [np.abs(g - w).max() / (np.abs(w).max() + 1e-6) for g, w in zip(got, want)]
    if dtype == 'float32':
      assert max(errors[True]) < 1e-5, errors
    else:
      assert all(f <= 2 * p + 1e-3 for f, p in zip(errors[True], errors[False])), errors


def test_patch_conv_equals_convolution():
  # Strides 1 and 2, a non-square image and kernel: the windows follow Keras' kernel layout.
  x = tf.random.normal([3, 7, 6, 5], seed=9)
  kernel = tf.random.normal([3, 2, 5, 4], seed=10)
  for stride in (1, 2):
    np.testing.assert_allclose(conv.patch_conv(x, kernel, stride).numpy(),
                               tf.nn.conv2d(x, kernel, stride, 'VALID').numpy(), atol=1e-4)


@pytest.mark.parametrize('fast,size,kernels', [
    (True, 64, (5, 5, 6, 6)), (False, 64, (5, 5, 6, 6)),
    (True, 6, (6,))])  # One layer, both first (a matmul) and last.
def test_decoder_means_keep_float32_resolution_under_bfloat16(fast, size, kernels):
  # In bfloat16 the means would round to steps of 2^-9 near 0.5, as large as a trained
  # model's residuals; the last layer computes in float32 (parity.md, reduced precision).
  dec = conv.Decoder({'image': (size, size, 3)}, 40, cnn_depth=4, cnn_kernels=kernels,
                     dtype='mixed_bfloat16', fast_deconv=fast)
  feat = tf.random.stateless_normal([2, 3, 40], [0, 1])
  mean = dec(feat)['image'].mode().numpy()
  rounded = tf.cast(tf.cast(mean, tf.bfloat16), tf.float32).numpy()
  assert (mean != rounded).mean() > 0.9
