"""Compute precision and device choice.

`precision` config values: `32` (float32), `16` (mixed_float16 with dynamic loss scaling, the
GPU path), `bf16` (mixed_bfloat16: bfloat16 compute, float32 variables; fast on CPUs with
AVX-512 BF16), `auto` (16 on GPU, 32 on CPU). Variables, optimizer state, likelihoods, KL,
lambda-returns and losses are float32 under every policy.
"""
from __future__ import annotations

import warnings

import tensorflow as tf

POLICIES = {'32': 'float32', '16': 'mixed_float16', 'bf16': 'mixed_bfloat16'}


def has_gpu() -> bool:
  return bool(tf.config.list_physical_devices('GPU'))


def resolve(precision) -> str:
  """Returns the Keras dtype policy name for a `precision` config value."""
  precision = str(precision)
  if precision == 'auto':
    precision = '16' if has_gpu() else '32'
  if precision not in POLICIES:
    raise ValueError(f'precision {precision!r} is not one of auto, {", ".join(POLICIES)}')
  if precision == '16' and not has_gpu():
    warnings.warn('precision 16 (float16) runs about 5x slower than float32 on CPU; '
                  'use --precision bf16 or 32 there', stacklevel=2)
  return POLICIES[precision]


def setup_devices() -> str:
  """Enables GPU memory growth and warns (never fails) when only a CPU is visible."""
  gpus = tf.config.list_physical_devices('GPU')
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
      pass  # Already initialised: memory growth can only be set before first use.
  if not gpus:
    warnings.warn('no GPU visible: training runs on the CPU, which is much slower', stacklevel=2)
    return 'cpu'
  return 'gpu'


def policy_xla(value) -> bool:
  """Whether the acting policy compiles with XLA, for a `policy_xla` config value.

  `auto` is on: the policy is a small graph (encoder, one RSSM step, actor) that XLA compiles in
  about a second per mode and batch size, and runs as a few fused kernels instead of a hundred
  small ones, which the batch-1 step is dominated by on CPU (`scripts/bench.py` reports both
  paths). On GPU the fusion removes kernel launches too, so `auto` is on there by design.
  """
  value = str(value).lower()
  if value not in ('auto', 'true', 'false'):
    raise ValueError(f'policy_xla {value!r} is not one of auto, true, false')
  return value != 'false'
