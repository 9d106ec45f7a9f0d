"""dreamerv2_tf: DreamerV2 (Hafner et al., ICLR 2021) in TensorFlow 2 / Keras 3.

Public API:
  load_config(presets, argv=()) -> Config
  train(env, config) -> logdir     (env=None makes the environments from config.task)
  Agent(config, obs_space, act_space)
  agent.train(batch) -> dict of float metrics
  agent.policy(obs, state=None, mode='train') -> (outputs, state)
"""
from dreamerv2_tf import onednn

onednn.enable()  # Before anything imports TensorFlow: it reads the switch once, at import.

from dreamerv2_tf.config import Config, ConfigError, load_config  # noqa: E402

__version__ = '0.1.0'
__all__ = ['Agent', 'Config', 'ConfigError', 'load_config', 'train']


def __getattr__(name):
  # Importing TensorFlow takes seconds; only pay for it when the agent is used.
  if name == 'Agent':
    from dreamerv2_tf.agent import Agent
    return Agent
  if name == 'train':
    from dreamerv2_tf.loop import train
    return train
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
