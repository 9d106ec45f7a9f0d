"""The acting half of the agent: one policy step per mode, compiled once per batch size.

`Agent` inherits these methods; they use its world model (`wm`), actor-critic (`ac`) and config.
Acting runs on one device whatever the training strategy, outside `strategy.run`.

On a CPU the policy computes in float32 even when training uses mixed bfloat16: at batch 1 the
step is bound by reading weights and by small convolutions, where bfloat16 measured slower
(4.5 ms against 2.9 ms for float32 under XLA at the atari preset). The weights are the same
float32 variables; only the compute dtype of the traced policy differs. On GPU the policy keeps
the training precision.
"""
from __future__ import annotations

import contextlib
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from dreamerv2_tf import dists, precision


def keras_layers(*roots) -> list:
  """Every Keras layer reachable from `roots` through attributes, lists, tuples and dicts.

  Our layers keep their sublayers in such attributes (built explicitly in `__init__`); Keras
  has no public way to list a layer's sublayers.
  """
  found, seen, stack = [], set(), list(roots)
  while stack:
    obj = stack.pop()
    if isinstance(obj, keras.layers.Layer):
      if id(obj) not in seen:
        seen.add(id(obj))
        found.append(obj)
        stack.extend(vars(obj).values())
    elif isinstance(obj, (list, tuple)):
      stack.extend(obj)
    elif isinstance(obj, dict):
      stack.extend(obj.values())
  return found


class Acting:
  """Policy methods of `Agent`: `initial_state`, `policy`, and the traced step per mode."""

  def initial_state(self, batch_size: int) -> tuple[dict, tf.Tensor]:
    """The policy's carried state: (RSSM latent, previous action), all zeros."""
    return (self.wm.rssm.initial(batch_size),
            tf.zeros([batch_size, self.wm.act_size], tf.float32))

  def _make_policy(self, mode, state_mean: bool | None = None):
    """The policy step `(obs, state) -> ({'action'}, state)` for a mode, as plain TF code.

    obs needs the encoder's keys and `is_first`; other keys are ignored. `state_mean` overrides
    `eval_state_mean` (for export).
    """
    if state_mean is None:
      state_mean = mode == 'eval' and self.config.eval_state_mean
    keys = self._policy_keys()

    def policy(obs, state):
      latent, action = state
      # Acting has no use for rewards or terminals; zeros keep preprocess's input contract.
      batch = tf.shape(obs['is_first'])[:1]
      data = self.wm.preprocess({**{k: obs[k] for k in keys}, 'reward': tf.zeros(batch),
                                 'is_terminal': tf.zeros(batch, tf.bool)})
      embed = self.wm.encoder(data)
      sample = not state_mean
      latent, _ = self.wm.rssm.obs_step(latent, action, embed, data['is_first'], sample,
                                        with_prior=False)
      # Explore mode acts with the exploration behaviour's actor, if it has one.
      actor = self.expl.ac.actor if mode == 'explore' and self.expl is not None else self.ac.actor
      dist = actor(self.wm.rssm.get_feat(latent))
      if mode == 'eval':
        action = self._noise(dist.mode(), self.config.eval_noise)
      elif mode == 'explore' and self.config.expl_behavior == 'random':
        action = self._random_action(tf.shape(embed)[0])
      else:
        action = self._noise(dist.sample(), self.config.expl_noise)
      return {'action': action}, (latent, action)
    return policy

  def _compile_policy(self, mode, xla: bool | None = None):
    """The policy step of a mode as a callable `(obs, state) -> (outputs, state)`.

    With `jit`, a tf.function, compiled by XLA when `xla` (default: the `policy_xla` config
    value) is on; the small graph compiles in about a second per batch size. One concrete
    function is kept per batch size and called directly: that skips tf.function's matching of
    the arguments against its traces, about 0.2 ms a call on CPU.
    """
    fn = self._make_policy(mode)
    if not self.config.jit:
      def eager(obs, state):
        with self.acting_precision():
          return fn(obs, state)
      return eager
    if xla is None:
      xla = precision.policy_xla(self.config.policy_xla, self.acting_dtype)
    fn = tf.function(fn, jit_compile=bool(xla), autograph=False)
    concrete = {}  # Batch size -> concrete function; a closure, so checkpoints never see it.

    def step(obs, state):
      batch = len(obs['is_first'])
      if batch not in concrete:
        with self.acting_precision():  # The compute dtype is fixed when tracing.
          concrete[batch] = fn.get_concrete_function(obs, state)
      return concrete[batch](obs, state)
    step.function = fn  # For tests and benchmarks: fn.experimental_get_tracing_count().
    return step

  @property
  def acting_dtype(self) -> str:
    """The Keras dtype policy the policy step computes in (see the module docstring)."""
    return self.dtype if precision.has_gpu() else 'float32'

  @contextlib.contextmanager
  def acting_precision(self):
    """Sets the acting networks' layers to `acting_dtype` while the policy step is traced."""
    if self.acting_dtype == self.dtype:
      yield
      return
    actors = [self.ac.actor] + ([self.expl.ac.actor] if self.expl is not None else [])
    layers = keras_layers(self.wm.encoder, self.wm.rssm, *actors)
    saved = [layer.dtype_policy for layer in layers]
    try:
      for layer in layers:
        layer.dtype_policy = self.acting_dtype
      yield
    finally:
      for layer, policy in zip(layers, saved):
        layer.dtype_policy = policy

  def _random_action(self, batch):
    """Uniform random actions (expl_behavior: random), in the agent's action format."""
    if self._discrete:
      index = tf.random.uniform([batch], 0, self.wm.act_size, tf.int32)
      return tf.one_hot(index, self.wm.act_size, dtype=tf.float32)
    return tf.random.uniform([batch, self.wm.act_size], -1, 1)

  def _noise(self, action, amount):
    if amount == 0:
      return action
    if self._discrete:
      probs = amount / action.shape[-1] + (1 - amount) * action
      return dists.OneHotDist(tf.math.log(probs)).sample()
    return tf.clip_by_value(action + amount * tf.random.normal(tf.shape(action)), -1, 1)

  def _policy_keys(self) -> tuple[str, ...]:
    """The observation keys the policy reads: the encoder's inputs and `is_first`."""
    return (*self.wm.encoder.cnn_keys, *self.wm.encoder.mlp_keys, 'is_first')

  def policy(self, obs: Mapping[str, np.ndarray], state=None, mode: str = 'train'):
    """Acts on a batch of observations `[B, ...]`.

    mode: `train` (sample the actor), `explore` (sample, plus `expl_noise`), or `eval` (the
    actor's mode, plus `eval_noise`). Returns `({'action': np.ndarray [B, A]}, state)`; pass the
    state back on the next call (None starts from zeros; `is_first` resets single entries).
    """
    try:
      fn = self._policy_fns[mode]
    except (KeyError, TypeError):
      raise ValueError(f'policy mode {mode!r}; allowed: {", ".join(self._policy_fns)}') from None
    # Only the keys the policy reads cross into TensorFlow: each input is converted per call.
    try:
      inputs = {k: obs[k] for k in self._policy_keys()}
    except KeyError as e:
      raise ValueError(f'obs lacks key {e.args[0]!r}; the policy reads '
                       f'{", ".join(self._policy_keys())}') from None
    first = inputs['is_first']
    if getattr(first, 'dtype', None) != bool:  # One input signature: no retrace for 0/1 flags.
      inputs['is_first'] = first = np.asarray(first, bool)
    if state is None:
      state = self.initial_state(len(first))
    outputs, state = fn(inputs, state)
    return {'action': outputs['action'].numpy()}, state
