"""The paper's side of the exploration cases: its `expl.py` behaviour on our weights and batch.

The same quantities, in the same order, as expl_ours.py (see there). The paper's Agent builds
the behaviour from `expl_behavior`, which its code looks up as a class name in its `expl`
module (`Plan2Explore`, `ModelLoss`): paper.reference_config translates our names.
"""
from __future__ import annotations

import numpy as np

from tests.reference.cases import (GradientRecorder, Recorder, by_owner, gradients,
                                   normaliser_results, owner, swapped)

CLASS_NAMES = {'plan2explore': 'Plan2Explore', 'model_loss': 'ModelLoss'}


def heads(behavior) -> dict:
  """The ensemble's members (or the model-loss head) by the names expl_ours.py gives ours."""
  if hasattr(behavior, '_networks'):
    return {f'expl/head{i}': net for i, net in enumerate(behavior._networks)}
  return {'expl/head': behavior.head}


def roots(agnt) -> dict:
  """The behaviour's networks by name, for paper.layer_map (its layers live under these)."""
  behavior = agnt._expl_behavior
  ac = behavior.ac
  return {**heads(behavior), 'expl_actor': ac.actor, 'expl_critic': ac.critic,
          'expl_slow_critic': ac._target_critic}


def build(agnt, outs: dict, data: dict, config) -> None:
  """One forward pass of every network of the behaviour creates its layers."""
  behavior = agnt._expl_behavior
  import tensorflow as tf
  inputs = outs['feat']
  if hasattr(behavior, '_networks') and config.disag_action_cond:
    inputs = tf.concat([inputs, tf.cast(data['action'], inputs.dtype)], -1)
  for net in heads(behavior).values():
    net(inputs)
  ac = behavior.ac
  for net in (ac.actor, ac.critic, ac._target_critic):
    net(outs['feat'])


def legacy_adam(agnt, config, tf) -> None:
  """The behaviour's optimizers as OptimizerV2 Adam, as paper.py does for the agent's."""
  behavior = agnt._expl_behavior
  for opt, block in ((behavior.opt, config.expl_opt), (behavior.ac.actor_opt, config.actor_opt),
                     (behavior.ac.critic_opt, config.critic_opt)):
    opt._opt = tf.keras.optimizers.legacy.Adam(block.lr, epsilon=block.eps)


def optimizer_state(prefix: str, opts: dict, weights: dict) -> dict:
  """The paper's Adam slots for every weight an optimizer of `opts` owns, and step counts."""
  res = {}
  for name, var in weights.items():
    if owner(name) not in opts:
      continue
    opt = opts[owner(name)]._opt
    if hasattr(opt, 'get_slot'):  # OptimizerV2 (legacy)
      res[f'{prefix}/m/{name}'] = opt.get_slot(var, 'm')
      res[f'{prefix}/v/{name}'] = opt.get_slot(var, 'v')
    else:  # The newer Keras 2 optimizer (--adam new).
      index = opt._index_dict[opt._var_key(var)]
      res[f'{prefix}/m/{name}'] = opt._momentums[index]
      res[f'{prefix}/v/{name}'] = opt._velocities[index]
  for name, opt in opts.items():
    res[f'{prefix}/iterations/{name}'] = opt._opt.iterations
  return res


def quantities(agnt, data: dict, weights: dict, tf) -> dict:
  wm, behavior = agnt.wm, agnt._expl_behavior
  ac, config = behavior.ac, behavior.config
  res = {}
  _, _, outs, _ = wm.loss(data)

  recorder = GradientRecorder(by_owner(weights, 'expl'))
  with swapped(behavior, opt=recorder), swapped(ac, train=lambda *args, **kwargs: {}):
    behavior.train(outs['post'], outs, data)
  res['expl_loss/loss'] = recorder.loss
  res.update(gradients('expl_loss/grad', recorder.named, recorder.grads))

  norms = {k: Recorder(getattr(behavior, k)) for k in ('intr_rewnorm', 'extr_rewnorm')
           if hasattr(behavior, k)}
  actor_vars, critic_vars = by_owner(weights, 'expl_actor'), by_owner(weights, 'expl_critic')
  with swapped(behavior, **norms):
    with tf.GradientTape() as tape:  # As the paper's ActorCritic.train.
      seq = wm.imagine(ac.actor, outs['post'], data['is_terminal'], config.imag_horizon)
      reward = behavior._intr_reward(seq)
      seq['reward'], _ = ac.rewnorm(reward)
      target, _ = ac.target(seq)
      loss, mets = ac.actor_loss(seq, target)
  res.update(gradients('expl_actor/grad', actor_vars, tape.gradient(loss, list(actor_vars.values()))))
  res['expl_actor/loss'] = loss
  res.update({f'expl_actor/metric/{k}': v for k, v in mets.items()})
  res['expl_reward/mixed'] = reward
  res.update(normaliser_results(norms.get('intr_rewnorm'), norms.get('extr_rewnorm')))
  for key in ('feat', 'action'):
    res[f'expl_imag/{key}'] = seq[key]
  res['expl_imag/value'] = ac._target_critic(seq['feat']).mode()
  res['expl_imag/target'] = target
  with tf.GradientTape() as tape:
    loss, mets = ac.critic_loss(seq, target)
  res['expl_critic/loss'] = loss
  res.update({f'expl_critic/metric/{k}': v for k, v in mets.items()})
  res.update(gradients('expl_critic/grad', critic_vars,
                    tape.gradient(loss, list(critic_vars.values()))))

  _, metrics = behavior.train(outs['post'], outs, data)  # One update, as the paper's Agent.train.
  res.update({f'expl_metric/{k}': v for k, v in metrics.items()})
  opts = {'expl': behavior.opt, 'expl_actor': ac.actor_opt, 'expl_critic': ac.critic_opt}
  for name, var in weights.items():
    if not name.startswith('expl'):
      continue
    res[f'expl_weight/{name}'] = var
  res.update(optimizer_state('expl_slot', opts, weights))
  return {k: np.asarray(v) for k, v in res.items()}
