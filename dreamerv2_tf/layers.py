"""Keras' Dense and convolution layers with bias gradients summed in float32.

Under mixed bfloat16 on a CPU, Keras adds a layer's bias with `tf.nn.bias_add`, and
TensorFlow's CPU kernel for its gradient (`BiasAddGrad`) sums the rows in bfloat16. The sum
stops growing once it is large next to a row's term, so a bias gradient over many rows is
wrong by a relative 3 % at 800 rows, 54 % at 12,000 and 99 % at 819,200
(`tests/test_layers.py`; a train step of the `dmc_vision` preset sums over 800 sequence steps,
12,000 imagined states and 800 x 30 x 30 decoder positions). The error is nearly the same at
every update, so it does not average out: `scripts/precision_check.py` measured the critic's
bf16 gradient 19 % away from float32's on the same batch and noise, with the errors of
different batches 0.999 correlated, and the bias gradients of the critic (69-87 %) and of the
decoder's middle layers (95-96 %) furthest away.

These layers compute what Keras' do, with the same variables (checkpoints are unchanged), but
add the bias with `add_bias`, whose gradient sums in float32, each image's positions first and
then the images (`sum_rows`: exact to about 1e-7 where one reduction over millions of rows of
one sign lost 1e-3).
"""
from __future__ import annotations

import keras
import tensorflow as tf


def add_bias(x: tf.Tensor, bias) -> tf.Tensor:
  """x + bias over the last axis; the bias gradient is summed in float32, then cast back.

  bias: a tensor or variable of any float dtype (it is cast to x's).
  """
  return _add_bias(x, tf.convert_to_tensor(bias))


def sum_rows(dy: tf.Tensor) -> tf.Tensor:
  """Sum over every axis but the last, in float32: the inner axes first, then the batch.

  One reduce_sum over all of them lost about 1e-3 of the decoder's last bias gradient (3.3M
  terms of one sign per channel at the dmc_vision preset, against a float64 sum); summing each
  image first and then the images is exact to about 1e-7, and faster.
  """
  dy = tf.cast(dy, tf.float32)
  if len(dy.shape) > 2:
    dy = tf.reduce_sum(dy, list(range(1, len(dy.shape) - 1)))
  return tf.reduce_sum(dy, 0)


@tf.custom_gradient
def _add_bias(x, bias):
  def grad(dy):
    return dy, tf.cast(sum_rows(dy), bias.dtype)
  return x + tf.cast(bias, x.dtype), grad


def _no_activation(layer):
  # The overridden `call`s below add no activation; the agent applies its own.
  if layer.activation is not keras.activations.linear:
    raise ValueError(f'{type(layer).__name__} takes no activation here')


class Dense(keras.layers.Dense):
  """`keras.layers.Dense` (no activation) with `add_bias`."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    _no_activation(self)

  def call(self, inputs):
    x = keras.ops.matmul(inputs, self.kernel)
    return add_bias(x, self.bias) if self.bias is not None else x


class Conv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D` (channels last, no activation) with `add_bias`."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    _no_activation(self)

  def call(self, inputs):
    x = self.convolution_op(inputs, self.kernel)
    return add_bias(x, self.bias) if self.use_bias else x


class Conv2DTranspose(keras.layers.Conv2DTranspose):
  """`keras.layers.Conv2DTranspose` (channels last, no activation) with `add_bias`."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    _no_activation(self)

  def call(self, inputs):
    x = keras.ops.conv_transpose(inputs, self.kernel, strides=list(self.strides),
                                 padding=self.padding, output_padding=self.output_padding,
                                 dilation_rate=self.dilation_rate,
                                 data_format=self.data_format)
    return add_bias(x, self.bias) if self.use_bias else x
