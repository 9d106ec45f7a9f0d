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

import gymnasium as gym
import tensorflow as tf

from dreamerv2_tf.errors import ConfigError

DATA_SKIP = ('reward', 'is_first', 'is_last', 'is_terminal')


class PolicyExport(tf.Module):
  """The acting part of an `Agent` (encoder, RSSM, actor) with explicit recurrent state."""

  def __init__(self, agent):
    super().__init__(name='dreamerv2_policy')
    # Only what acting needs is tracked, so the SavedModel holds no decoder or optimizer state.
    self.encoder, self.rssm, self.actor = agent.wm.encoder, agent.wm.rssm, agent.ac.actor
    self._agent = agent
    spaces = agent.obs_space.spaces
    self.obs_specs = {k: tf.TensorSpec([None, *v.shape], v.dtype, name=k)
                      for k, v in spaces.items() if k not in DATA_SKIP}
    self.obs_specs['is_first'] = tf.TensorSpec([None], tf.bool, name='is_first')
    latent, action = agent.initial_state(1)
    self.state_specs = {f'state_{k}': tf.TensorSpec([None, *v.shape[1:]], v.dtype,
                                                    name=f'state_{k}')
                        for k, v in {**latent, 'action': action}.items()}
    specs = {**self.obs_specs, **self.state_specs}
    self.step = tf.function(self._stepper('eval', True), input_signature=[specs],
                            autograph=False)
    self.step_sample = tf.function(self._stepper('train', False), input_signature=[specs],
                                   autograph=False)
    self.initial_state = tf.function(
        self._initial, input_signature=[tf.TensorSpec([], tf.int32, name='batch_size')],
        autograph=False)

  def _initial(self, batch_size):
    latent, action = self._agent.initial_state(batch_size)
    return {f'state_{k}': v for k, v in {**latent, 'action': action}.items()}

  def _stepper(self, mode, state_mean):
    policy = self._agent._make_policy(mode, state_mean=state_mean)

    def step(inputs):
      obs = {k: inputs[k] for k in self.obs_specs}
      batch = tf.shape(obs['is_first'])[0]
      obs['reward'] = tf.zeros([batch], tf.float32)  # Unused by acting; preprocess wants them.
      obs['is_terminal'] = tf.zeros([batch], tf.bool)
      state = {k[len('state_'):]: inputs[k] for k in self.state_specs}
      action = state.pop('action')
      outputs, (latent, action) = policy(obs, (state, action))
      return {'action': outputs['action'],
              **{f'state_{k}': v for k, v in {**latent, 'action': action}.items()}}
    return step


def describe_spaces(agent, config) -> dict:
  """A JSON description of the observation and action spaces and the acting settings."""
  act = agent.act_space
  action = ({'type': 'discrete', 'n': int(act.n), 'format': 'one-hot float32'}
            if isinstance(act, gym.spaces.Discrete) else
            {'type': 'continuous', 'shape': list(act.shape), 'low': -1.0, 'high': 1.0})
  return {
      'task': config.task, 'action_repeat': config.action_repeat,
      'observation': {k: {'shape': list(v.shape), 'dtype': str(v.dtype)}
                      for k, v in agent.obs_space.spaces.items() if k not in DATA_SKIP},
      'action': action,
  }


def export(logdir, out, checkpoint: str | None = None, force: bool = False) -> pathlib.Path:
  """Writes the SavedModel of a run's policy to `out`, atomically (a temp dir, then a rename)."""
  from dreamerv2_tf.evaluate import check_logdir, load_run
  check_logdir(logdir)
  out = pathlib.Path(out)
  if out.exists() and any(out.iterdir()) and not force:
    raise ConfigError(f'--out {str(out)!r} exists and is not empty; pass --force to replace it')
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
