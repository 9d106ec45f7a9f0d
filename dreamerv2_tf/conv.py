"""Convolutional encoder and decoder of the world model (image observations).

Some layers run through faster equivalent kernels where oneDNN's own is slow on CPU: the
encoder's last convolution (`fast_conv`) and the decoder's first and last transposed
convolutions (`fast_deconv`). The weights are the same Keras `Conv2D`/`Conv2DTranspose` kernels
either way, so checkpoints and parameter counts do not change.
"""
from __future__ import annotations

import re
from typing import Mapping

import keras
import tensorflow as tf

from dreamerv2_tf import dists, layers
from dreamerv2_tf.nets import DenseStack, DistLayer, built, dims, get_act, norm_layer


def _select(shapes: Mapping[str, tuple], pattern: str, ndim: int) -> list[str]:
  return [k for k, v in shapes.items() if re.match(pattern, k) and len(v) == ndim]


class Encoder(keras.layers.Layer):
  """Embeds observations: a strided CNN for image keys and an MLP for vector keys.

  Image keys are those matching `cnn_keys` with 3 dims (H, W, C); vector keys those matching
  `mlp_keys` with 1 dim. Inputs are preprocessed floats of shape `[..., *shape]`; the output has
  the same leading dims and `embed_size` features. `fast_conv` computes convolutions with at
  most `PATCH_MAX_PIXELS` output pixels (the last one: 2x2) as one matmul (`patch_conv`).
  """

  def __init__(self, shapes: Mapping[str, tuple], cnn_keys='.*', mlp_keys='.*', act='elu',
               norm='none', cnn_depth=48, cnn_kernels=(4, 4, 4, 4),
               mlp_layers=(400, 400, 400, 400), fast_conv=True, **kwargs):
    super().__init__(**kwargs)
    self._fast = bool(fast_conv)
    self.shapes = dict(shapes)
    self.cnn_keys = _select(self.shapes, cnn_keys, 3)
    self.mlp_keys = _select(self.shapes, mlp_keys, 1)
    if not self.cnn_keys and not self.mlp_keys:
      raise ValueError(f'the encoder selects no observation key from {sorted(self.shapes)} with '
                       f'cnn_keys={cnn_keys!r} and mlp_keys={mlp_keys!r}')
    self._act = get_act(act)
    self.convs, self.conv_norms = [], []
    self.embed_size = 0
    if self.cnn_keys:
      h, w = self.shapes[self.cnn_keys[0]][:2]
      channels = sum(self.shapes[k][-1] for k in self.cnn_keys)
      for i, kernel in enumerate(cnn_kernels):
        depth = 2 ** i * cnn_depth
        conv = layers.Conv2D(depth, kernel, 2, dtype=self.dtype_policy)
        self.convs.append(built(conv, (None, h, w, channels)))
        h, w = (h - kernel) // 2 + 1, (w - kernel) // 2 + 1
        if h < 1 or w < 1:
          raise ValueError(f'image of shape {self.shapes[self.cnn_keys[0]]} is too small for '
                           f'encoder kernels {list(cnn_kernels)}')
        self.conv_norms.append(norm_layer(norm, depth, self.dtype_policy))
        channels = depth
      self.embed_size += h * w * channels
    self.mlp = None
    if self.mlp_keys:
      size = sum(self.shapes[k][0] for k in self.mlp_keys)
      self.mlp = DenseStack(size, mlp_layers, act, norm, dtype=self.dtype_policy)
      self.embed_size += self.mlp.out_size
    self.built = True

  def call(self, data: Mapping[str, tf.Tensor]) -> tf.Tensor:
    outputs = []
    if self.cnn_keys:
      x = tf.concat([tf.cast(data[k], self.compute_dtype) for k in self.cnn_keys], -1)
      lead = dims(x)[:-3]
      x = tf.reshape(x, [-1] + x.shape[-3:].as_list())
      for conv, norm in zip(self.convs, self.conv_norms):
        if self._fast and _out_pixels(x.shape, conv) <= PATCH_MAX_PIXELS:
          x = patch_conv(x, tf.cast(conv.kernel, self.compute_dtype), conv.strides[0])
          x = layers.add_bias(x, conv.bias)
        else:
          x = conv(x)
        x = norm(x) if norm is not None else x
        x = self._act(x)
      x = tf.reshape(x, lead + [x.shape[1] * x.shape[2] * x.shape[3]])
      outputs.append(x)
    if self.mlp is not None:
      x = tf.concat([tf.cast(data[k], self.compute_dtype) for k in self.mlp_keys], -1)
      outputs.append(self.mlp(x))
    return tf.concat(outputs, -1)


# Largest output (in pixels) that `patch_conv` computes: its copies of the input grow with it.
# The encoder's last layer (2x2) ran 1.6x faster this way in bfloat16; its 6x6 layer slower.
PATCH_MAX_PIXELS = 4


def _out_pixels(shape, conv: keras.layers.Conv2D) -> int:
  (kh, kw), (sh, sw) = conv.kernel_size, conv.strides
  return ((shape[1] - kh) // sh + 1) * ((shape[2] - kw) // sw + 1)


def patch_conv(x: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
  """A 'VALID' convolution as one matmul over its output pixels' receptive fields.

  Row p of the patch matrix is output pixel p's k x k x C_in input window, flattened in the
  kernel's own (kh, kw, C_in) order, so the Keras kernel reshaped to `[k * k * C_in, C_out]`
  multiplies all windows at once. The copies cost one input window per output pixel, which is
  cheap for a few output pixels. x: `[N, H, W, C_in]`; kernel: `[kh, kw, C_in, C_out]`.
  """
  kh, kw, cin, cout = kernel.shape
  out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  windows = [x[:, stride * i:stride * i + kh, stride * j:stride * j + kw]
             for i in range(out_h) for j in range(out_w)]
  # A 2-D matmul: oneDNN's batched matmul with a broadcast kernel measured several times slower.
  windows = tf.reshape(tf.stack(windows, 1), [-1, kh * kw * cin])
  y = tf.matmul(windows, tf.reshape(kernel, [kh * kw * cin, cout]))
  return tf.reshape(y, [-1, out_h, out_w, cout])


class Decoder(keras.layers.Layer):
  """Reconstructs observations from features: transposed CNN for images, MLP for vectors.

  Returns a dict of unit-variance Normal distributions, one per observation key. The CNN path
  maps features to a 1x1 map and upsamples with `cnn_kernels` at stride 2 (64x64 for 5,5,6,6).
  `fast_deconv` computes the first transposed convolution as the matmul it is and the last one
  (few output channels) as a sub-pixel convolution; `false` runs plain transposed convolutions
  (`layers.py`). The last layer computes in float32 under mixed precision.
  """

  def __init__(self, shapes: Mapping[str, tuple], in_size: int, cnn_keys='.*', mlp_keys='.*',
               act='elu', norm='none', cnn_depth=48, cnn_kernels=(5, 5, 6, 6),
               mlp_layers=(400, 400, 400, 400), fast_deconv=True, **kwargs):
    super().__init__(**kwargs)
    self.shapes = dict(shapes)
    self.cnn_keys = _select(self.shapes, cnn_keys, 3)
    self.mlp_keys = _select(self.shapes, mlp_keys, 1)
    self._act = get_act(act)
    self._depth = cnn_depth
    self._fast = bool(fast_deconv)
    self.convin, self.convs, self.conv_norms = None, [], []
    if self.cnn_keys:
      self._channels = [self.shapes[k][-1] for k in self.cnn_keys]
      self.convin = built(layers.Dense(32 * cnn_depth, dtype=self.dtype_policy),
                          (None, in_size))
      size, channels = 1, 32 * cnn_depth
      for i, kernel in enumerate(cnn_kernels):
        last = i == len(cnn_kernels) - 1
        depth = sum(self._channels) if last else 2 ** (len(cnn_kernels) - i - 2) * cnn_depth
        # The image means leave the last layer in float32: in bfloat16 their rounding (2^-9
        # near 0.5) is as large as a trained model's residuals, and the loss gradient with it
        # (parity.md, "Reduced precision against float32").
        cls = layers.Conv2DTranspose
        if self._fast:
          cls = MatmulDeconv if i == 0 else SubpixelDeconv if last else cls
        conv = cls(depth, kernel, 2, dtype='float32' if last else self.dtype_policy)
        self.convs.append(built(conv, (None, size, size, channels)))
        self.conv_norms.append(None if last else norm_layer(norm, depth, self.dtype_policy))
        size, channels = (size - 1) * 2 + kernel, depth
      want = self.shapes[self.cnn_keys[0]][:2]
      if tuple(want) != (size, size):
        raise ValueError(f'decoder kernels {list(cnn_kernels)} produce {size}x{size} images, '
                         f'but the observation {self.cnn_keys[0]!r} is {want[0]}x{want[1]}')
    self.mlp, self.mlp_heads = None, {}
    if self.mlp_keys:
      self.mlp = DenseStack(in_size, mlp_layers, act, norm, dtype=self.dtype_policy)
      for key in self.mlp_keys:
        self.mlp_heads[key] = DistLayer(self.mlp.out_size, self.shapes[key], 'mse',
                                        dtype=self.dtype_policy)
    self.built = True

  def call(self, feat: tf.Tensor) -> dict:
    out = {}
    if self.cnn_keys:
      x = self.convin(tf.cast(feat, self.compute_dtype))
      lead = dims(x)[:-1]
      x = tf.reshape(x, [-1, 1, 1, 32 * self._depth])
      last = len(self.convs) - 1
      for i, (conv, norm) in enumerate(zip(self.convs, self.conv_norms)):
        x = conv(x)
        if i < last:
          x = norm(x) if norm is not None else x
          x = self._act(x)
      x = tf.reshape(x, lead + x.shape[1:].as_list())
      means = tf.split(x, self._channels, -1)
      for key, mean in zip(self.cnn_keys, means):
        out[key] = dists.MSEDist(mean, 3)
    if self.mlp is not None:
      x = self.mlp(feat)
      for key, head in self.mlp_heads.items():
        out[key] = head(x)
    return out


class MatmulDeconv(layers.Conv2DTranspose):
  """The decoder's first transposed convolution, computed as the dense layer it is.

  Its input is a 1x1 map, so out[i, j, c] = sum_k x[k] W[i, j, c, k]: one matmul with the same
  kernel variable. oneDNN's transposed convolution ran this 8x slower (15x with gradients).
  """

  def call(self, inputs):
    k, _, cout, cin = self.kernel.shape
    w = tf.reshape(tf.transpose(tf.cast(self.kernel, self.compute_dtype), [3, 0, 1, 2]),
                   [cin, k * k * cout])
    x = tf.reshape(tf.cast(inputs, self.compute_dtype), [-1, cin])
    return layers.add_bias(tf.reshape(tf.matmul(x, w), [-1, k, k, cout]), self.bias)


class SubpixelDeconv(layers.Conv2DTranspose):
  """The decoder's last transposed convolution, computed by `subpixel_deconv`."""

  def call(self, inputs):
    x = subpixel_deconv(tf.cast(inputs, self.compute_dtype),
                        tf.cast(self.kernel, self.compute_dtype))
    return layers.add_bias(x, self.bias)


@tf.custom_gradient
def subpixel_deconv(x: tf.Tensor, kernel: tf.Tensor):
  """Stride-2 'VALID' transposed convolution as one stride-1 convolution and depth_to_space.

  Output pixel y = 2m + p (phase p in {0, 1}, per axis) sums x[m - j] * W[2j + p] over j, so
  each phase is an ordinary convolution of the zero-padded input with every other kernel tap,
  flipped. The four phases become 4 * C_out output channels of one convolution; depth_to_space
  interleaves them. For the decoder's last layer (C_out = image channels) oneDNN runs this
  3-4x faster than its transposed convolution. The gradient uses the native kernels (which are
  fast in that direction). x: `[N, n, n, C_in]`; kernel: `[k, k, C_out, C_in]`, Keras' layout.
  """
  k, _, cout, cin = kernel.shape
  n = x.shape[1]
  taps = (k + 1) // 2  # Kernel taps per phase (zero-padded to an even kernel).
  w = tf.pad(kernel, [[0, 2 * taps - k], [0, 2 * taps - k], [0, 0], [0, 0]])
  w = tf.reshape(w, [taps, 2, taps, 2, cout, cin])  # Tap index 2j + p -> (j, p).
  w = tf.reverse(w, [0, 2])
  w = tf.reshape(tf.transpose(w, [0, 2, 5, 1, 3, 4]), [taps, taps, cin, 4 * cout])
  pad = taps - 1
  y = tf.nn.conv2d(tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), w, 1, 'VALID')
  size = 2 * (n - 1) + k
  y = tf.nn.depth_to_space(y, 2)[:, :size, :size]

  def grad(dy):
    dx = tf.nn.conv2d(dy, kernel, 2, 'VALID')
    dkernel = tf.raw_ops.Conv2DBackpropFilter(
        input=dy, filter_sizes=tf.shape(kernel), out_backprop=x, strides=[1, 2, 2, 1],
        padding='VALID')
    return dx, dkernel
  return y, grad
