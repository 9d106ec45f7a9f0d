"""The SavedModel's module: a trained agent's acting part with its recurrent state made explicit.

`export.py` writes it; its signatures are documented there.
"""
from __future__ import annotations

import gymnasium as gym
import tensorflow as tf

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
