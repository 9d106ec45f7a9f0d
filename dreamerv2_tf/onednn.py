"""oneDNN kernels on every x86 CPU, not only the ones TensorFlow turns them on for.

TensorFlow's x86 build runs convolutions and matmuls through oneDNN by default only on CPUs with
AVX-512 VNNI, AVX-512 BF16 or AMX; on others (AVX2 machines: many laptops and cloud VMs) it uses
its Eigen kernels, whose convolution gradients are slow. On a 2-core AVX2 AMD EPYC a `dmc_vision`
float32 train step measured faster with oneDNN, and the paper's own code far more so
(docs/performance.md). The switch is TensorFlow's documented environment variable
`TF_ENABLE_ONEDNN_OPTS`, read once when TensorFlow is imported: importing `dreamerv2_tf` before
`tensorflow` sets it unless it is set already; `TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen.
"""
from __future__ import annotations

import os
import platform
import sys

VARIABLE = 'TF_ENABLE_ONEDNN_OPTS'


def _x86() -> bool:
  return platform.machine().lower() in ('x86_64', 'amd64')


def enable() -> None:
  """Sets `TF_ENABLE_ONEDNN_OPTS=1` on x86 unless it is set or TensorFlow is already imported
  (ARM keeps TensorFlow's own default, oneDNN with ACL)."""
  if _x86() and 'tensorflow' not in sys.modules:
    os.environ.setdefault(VARIABLE, '1')


def child_env() -> dict[str, str]:
  """What a new process's environment needs to get the kernels `enable` picks whatever it
  imports first: `{VARIABLE: '1'}` on x86 unless set here already, else nothing."""
  return {VARIABLE: '1'} if _x86() and VARIABLE not in os.environ else {}
