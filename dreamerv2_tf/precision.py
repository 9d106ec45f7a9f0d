"""Compute precision and device choice.

`precision` config values: `32` (float32), `16` (mixed_float16 with dynamic loss scaling, the
GPU path), `bf16` (mixed_bfloat16: bfloat16 compute, float32 variables; fast on CPUs with
AVX-512 BF16), `auto` (chosen from measurements, see `auto_precision`). Variables, optimizer
state, likelihoods, KL, lambda-returns and losses are float32 under every policy.
"""
from __future__ import annotations

import warnings

import tensorflow as tf

from dreamerv2_tf import onednn

POLICIES = {'32': 'float32', '16': 'mixed_float16', 'bf16': 'mixed_bfloat16'}


def has_gpu() -> bool:
  return bool(tf.config.list_physical_devices('GPU'))


def cpu_has_bf16() -> bool:
  """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = next((line for line in f if line.startswith('flags')), '').split()
  except OSError:  # Not Linux: assume no (float32 is the safe choice).
    return False
  return 'avx512_bf16' in flags or 'amx_bf16' in flags


def machine() -> dict:
  """What a benchmark's figures were measured on: CPU model, cores, matmul extensions, GPU."""
  import os
  import platform
  cpu, flags = platform.processor() or platform.machine(), []
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
        elif line.startswith('flags'):
          flags = line.split()
          break
  except OSError:
    pass
  return {'cpu': cpu, 'cpus': os.cpu_count(),
          'extensions': [x for x in ('avx512_bf16', 'amx_bf16', 'amx_tile') if x in flags],
          'gpu': has_gpu(), 'tensorflow': tf.__version__,
          onednn.VARIABLE: os.environ.get(onednn.VARIABLE, 'unset')}


def auto_precision() -> tuple[str, str]:
  """The `precision` that `auto` means on this machine, and why.

  GPU: 16 (mixed_float16 with loss scaling; tensor cores; designed, not measured here). CPU
  with native bfloat16: bf16, whose train step measured 1.6x faster than float32 at the atari
  preset with losses within 0.3 % (docs/performance.md). Other CPUs: 32 (bfloat16 is emulated
  there and float16 is about 5x slower than float32).
  """
  if has_gpu():
    return '16', 'GPU: mixed_float16 with loss scaling'
  if cpu_has_bf16():
    return 'bf16', 'CPU with native bfloat16: the fastest measured train step'
  return '32', 'CPU without native bfloat16'


def resolve(precision) -> str:
  """Returns the Keras dtype policy name for a `precision` config value."""
  precision = str(precision)
  if precision == 'auto':
    precision = auto_precision()[0]
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


def policy_xla(value, precision='auto') -> bool:
  """Whether the acting policy compiles with XLA, for a `policy_xla` config value.

  precision: the agent's `precision` config value or Keras dtype policy name (`auto` resolves as
  the agent does). `auto` is on on GPU (fusion saves kernel launches; designed, not measured: no
  GPU was available) and on CPU in float32: the policy is a small graph (encoder, one RSSM step,
  actor) that XLA compiles in about a second per mode and batch size, and its batch-1 step ran
  1.2-1.4x faster, never slower at batch 8. `auto` is off on CPU under mixed bfloat16 or float16:
  XLA's CPU kernels for them made the step 1.3-1.4x slower than the plain tf.function
  (`scripts/bench.py` reports both paths per variant).
  """
  value = str(value).lower()
  if value not in ('auto', 'true', 'false'):
    raise ValueError(f'policy_xla {value!r} is not one of auto, true, false')
  if value != 'auto':
    return value == 'true'
  precision = str(precision)
  name = precision if precision in POLICIES.values() else resolve(precision)
  return has_gpu() or name == 'float32'
