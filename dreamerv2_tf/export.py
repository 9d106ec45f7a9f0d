"""Exports a trained policy as a TensorFlow SavedModel that needs nothing but TensorFlow.

Serving signatures (all tensors batch-major, batch size B free):

  initial_state(batch_size: int32 [])             -> {state_deter, state_stoch, state_<stats>,
                                                      state_action}, all zeros
  step(<obs keys>, is_first, state_*)             -> {action, state_*}   deterministic: posterior
                                                      mode and actor mode (the eval policy)
  step_sample(<obs keys>, is_first, state_*)      -> {action, state_*}   sampled posterior and
                                                      actor (the training behaviour)

Observation keys are the agent's data keys (`image` uint8 `[B, 64, 64, C]` and/or float32
vectors); `is_first` bool `[B]` resets an entry's state. `action` is one-hot float32 `[B, n]` for
discrete action spaces (take its argmax) or float32 in [-1, 1] for continuous ones. The caller
carries the state: feed each step's `state_*` outputs into the next call. The run's config and
the observation and action spaces are stored in `assets.extra/` beside the model.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

from dreamerv2_tf.errors import ConfigError


def export(logdir, out, checkpoint: str | None = None, force: bool = False) -> pathlib.Path:
  """Writes the SavedModel of a run's policy to `out`, atomically (a temp dir, then a rename)."""
  from dreamerv2_tf.evaluate import check_logdir, find_checkpoint, load_run
  # Every mistake in the arguments is answered before TensorFlow's import (seconds).
  find_checkpoint(check_logdir(logdir), checkpoint)
  out = pathlib.Path(out)
  if out.exists() and any(out.iterdir()) and not force:
    raise ConfigError(f'--out {str(out)!r} exists and is not empty; pass --force to replace it')
  import tensorflow as tf
  from dreamerv2_tf.saved_policy import PolicyExport, describe_spaces
  config, agent, path, frames = load_run(logdir, checkpoint)
  module = PolicyExport(agent)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.tmp-'))
  try:
    # Traced in the agent's acting precision (float32 on CPU), so the SavedModel acts as the
    # agent does; saving only writes what is traced here.
    with agent.acting_precision():
      signatures = {name: getattr(module, name).get_concrete_function()
                    for name in ('initial_state', 'step', 'step_sample')}
      tf.saved_model.save(module, str(tmp), signatures=signatures)
    extra = tmp / 'assets.extra'
    extra.mkdir()
    config.save(extra / 'config.yaml')
    info = {**describe_spaces(agent, config), 'checkpoint': path, 'frames': frames}
    (extra / 'spaces.json').write_text(json.dumps(info, indent=2) + '\n')
    old = None
    if out.exists():
      old = out.with_name(f'.{out.name}.old-{os.getpid()}')
      os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
      shutil.rmtree(old)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out
