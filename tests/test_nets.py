"""Network building blocks against reference computations."""
import numpy as np
import tensorflow as tf

from dreamerv2_tf import nets


def test_decoder_dense_first_deconv_matches_transposed_conv():
  # The first transposed convolution runs as a matmul; it must equal Keras' own layer on a 1x1
  # map, in value and in gradient, or checkpoints and the paper's network would disagree.
  dec = nets.Decoder({'image': (64, 64, 3)}, 40, cnn_depth=4, dtype='float32')
  conv = dec.convs[0]
  x = tf.random.normal([5, 32 * 4], seed=1)
  with tf.GradientTape(persistent=True) as tape:
    ours = dec._dense_deconv(conv, x)
    ref = conv(tf.reshape(x, [-1, 1, 1, 32 * 4]))
  assert ours.shape == ref.shape == (5, 5, 5, 4 * 4)
  np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
  for a, b in zip(tape.gradient(ours, conv.trainable_variables),
                  tape.gradient(ref, conv.trainable_variables)):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-4)
  # And the whole decoder still produces the image shape, under bfloat16 too.
  feat = tf.random.normal([2, 3, 40])
  assert dec(feat)['image'].mode().shape == (2, 3, 64, 64, 3)
  dec16 = nets.Decoder({'image': (64, 64, 1)}, 40, cnn_depth=4, dtype='mixed_bfloat16')
  assert dec16(feat)['image'].mode().dtype == tf.float32
