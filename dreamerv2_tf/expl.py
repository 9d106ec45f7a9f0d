"""Exploration behaviours: a second actor-critic trained in imagination on an intrinsic reward.

`expl_behavior` picks the policy of `explore` mode (used until `expl_until` agent steps):
  greedy        the task actor (nothing here);
  random        uniform random actions (acting.py);
  plan2explore  Plan2Explore (Sekar et al. 2020): an ensemble of `disag_models` one-step
                predictors of `disag_target`; their disagreement (std over the ensemble,
                averaged over the target's dimensions) is the intrinsic reward;
  model_loss    a head that predicts the world model's per-step KL; its prediction is the
                intrinsic reward (states the model still explains badly).
The exploration actor-critic optimises `expl_intr_scale * intrinsic + expl_extr_scale * task`
reward, each normalised by its own `expl_reward_norm` (Plan2Explore), on the same imagined
starts as the task actor-critic, in the same compiled train step.
"""
from __future__ import annotations

import tensorflow as tf

from dreamerv2_tf import nets
from dreamerv2_tf.optim import Optimizer
from dreamerv2_tf.returns import StreamNorm

BEHAVIORS = ('greedy', 'random', 'plan2explore', 'model_loss')


def _kwargs(block) -> dict:
  return dict(block.to_dict())


class Plan2Explore(tf.Module):
  """Ensemble disagreement as the intrinsic reward of a second actor-critic.

  The ensemble learns on replayed sequences, from features (and, with `disag_action_cond`, the
  action that led into the step, as the paper's code feeds it) to the target `disag_offset`
  steps later:

    feat:    [f0]  [f1]  [f2]   f3
    action:  [a0]  [a1]  [a2]   a3     (a_t led into step t)
    target:   y0   [y1]  [y2]  [y3]    (offset 1: f_t, a_t predict y_{t+1})
  """

  def __init__(self, config, wm, actor_critic, dtype: str, loss_scale: bool = False):
    super().__init__(name='plan2explore')
    self.config, self.ac = config, actor_critic
    feat, deter = wm.rssm.feat_size, config.rssm.deter
    # The paper's code sizes the `feat` target as stoch + deter, which is the feature size only
    # for Gaussian latents; with 32x32 categoricals it is 32 + deter and fails. The true size:
    sizes = {'stoch': feat - deter, 'deter': deter, 'feat': feat, 'embed': wm.encoder.embed_size}
    self.target_size = sizes[config.disag_target]
    self._stoch_size = feat - deter
    in_size = feat + (wm.act_size if config.disag_action_cond else 0)
    self.heads = [nets.MLP(in_size, [self.target_size], **_kwargs(config.expl_head), dtype=dtype)
                  for _ in range(config.disag_models)]
    # Keras layers reach checkpoints through their optimizer (see ActorCritic).
    self.opt = Optimizer('expl', **_kwargs(config.expl_opt), loss_scale=loss_scale,
                         variables=[v for h in self.heads for v in h.trainable_variables])
    self.intr_norm = StreamNorm(**_kwargs(config.expl_reward_norm))
    self.extr_norm = StreamNorm(**_kwargs(config.expl_reward_norm))

  @property
  def modules_(self) -> list:
    return list(self.heads)

  def targets(self, outputs: dict) -> tf.Tensor:
    """The ensemble's target from the world model's outputs on replayed data, `[B, T, size]`."""
    feat = outputs['feat']  # concat(flatten(z), h): see RSSM.get_feat.
    return {'stoch': lambda: feat[..., :self._stoch_size],
            'deter': lambda: feat[..., self._stoch_size:],
            'feat': lambda: feat, 'embed': lambda: outputs['embed']}[self.config.disag_target]()

  def _inputs(self, feat: tf.Tensor, action: tf.Tensor) -> tf.Tensor:
    if self.config.disag_action_cond:
      return tf.concat([feat, tf.cast(action, feat.dtype)], -1)
    return feat

  def train(self, wm, outputs: dict, data: dict, noise=None) -> dict:
    inputs = tf.stop_gradient(self._inputs(outputs['feat'], data['action']))
    targets = tf.stop_gradient(tf.cast(self.targets(outputs), tf.float32))
    offset = self.config.disag_offset
    if offset:
      inputs, targets = inputs[:, :-offset], targets[:, offset:]
    with tf.GradientTape() as tape:
      loss = -tf.add_n([tf.reduce_mean(h(inputs).log_prob(targets)) for h in self.heads])
    metrics = self.opt(tape, loss)
    metrics.update(self.ac.train(wm, outputs['post'], data['is_terminal'], noise,
                                 reward_fn=lambda seq: self.reward(wm, seq)))
    return metrics

  def disagreement(self, feat: tf.Tensor, action: tf.Tensor) -> tf.Tensor:
    """Std of the ensemble's predicted means over its members, averaged over the target."""
    inputs = self._inputs(feat, action)
    preds = tf.stack([h(inputs).mode() for h in self.heads], 0)
    return tf.reduce_mean(tf.math.reduce_std(preds, 0), -1)

  def reward(self, wm, seq: dict) -> tf.Tensor:
    """The exploration actor's reward on an imagined sequence (time-major), `[H+1, B*T]`.

    intr_scale * norm(disagreement) + extr_scale * norm(task reward); each call updates both
    normalisers' running magnitudes.
    """
    disag = self.disagreement(seq['feat'], seq['action'])
    if self.config.disag_log:
      disag = tf.math.log(disag)
    reward = self.config.expl_intr_scale * self.intr_norm(disag)[0]
    if self.config.expl_extr_scale:
      task = wm.heads['reward'](seq['feat']).mode()
      reward += self.config.expl_extr_scale * self.extr_norm(task)[0]
    return reward


class ModelLoss(tf.Module):
  """The world model's predicted per-step KL (`expl_model_loss`) as the intrinsic reward."""

  def __init__(self, config, wm, actor_critic, dtype: str, loss_scale: bool = False):
    super().__init__(name='model_loss_expl')
    self.config, self.ac = config, actor_critic
    self.head = nets.MLP(wm.rssm.feat_size, [], **_kwargs(config.expl_head), dtype=dtype)
    self.opt = Optimizer('expl', **_kwargs(config.expl_opt), loss_scale=loss_scale,
                         variables=self.head.trainable_variables)

  @property
  def modules_(self) -> list:
    return [self.head]

  def train(self, wm, outputs: dict, data: dict, noise=None) -> dict:
    target = tf.stop_gradient(tf.cast(outputs[self.config.expl_model_loss], tf.float32))
    feat = tf.stop_gradient(outputs['feat'])
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(self.head(feat).log_prob(target))
    metrics = self.opt(tape, loss)
    metrics.update(self.ac.train(wm, outputs['post'], data['is_terminal'], noise,
                                 reward_fn=lambda seq: self.reward(wm, seq)))
    return metrics

  def reward(self, wm, seq: dict) -> tf.Tensor:
    """The exploration actor's reward on an imagined sequence (time-major), `[H+1, B*T]`.

    intr_scale * predicted KL + extr_scale * task reward, neither normalised (as the paper's).
    """
    reward = self.config.expl_intr_scale * self.head(seq['feat']).mode()
    if self.config.expl_extr_scale:
      reward += self.config.expl_extr_scale * wm.heads['reward'](seq['feat']).mode()
    return reward


def make(config, wm, actor_critic_fn, dtype: str, loss_scale: bool = False):
  """The behaviour for `config.expl_behavior`, or None for greedy and random (no training).

  actor_critic_fn: builds the behaviour's own ActorCritic (same config as the task's).
  """
  kind = config.expl_behavior
  if kind not in BEHAVIORS:
    raise ValueError(f'expl_behavior {kind!r}; allowed: {", ".join(BEHAVIORS)}')
  if kind in ('greedy', 'random'):
    return None
  cls = {'plan2explore': Plan2Explore, 'model_loss': ModelLoss}[kind]
  return cls(config, wm, actor_critic_fn(), dtype, loss_scale)
