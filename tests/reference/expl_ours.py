"""Our side of the exploration cases: Plan2Explore's ensemble or the model-loss head, the
exploration rewards, and its actor-critic, on the weights and batch ours.py wrote.

The quantities, in this order on both sides (the reward normalisers keep state, so the order
matters):
  expl_loss/    the ensemble's (or head's) loss and its gradient for the heads' weights, from
                the behaviour's own `train` with its optimizer recording instead of stepping and
                its actor-critic not run;
  expl_reward/  on trajectories the exploration actor imagines from every posterior state: the
                disagreement, the normalisers' inputs and outputs, and the mixed reward;
  expl_imag/, expl_actor/, expl_critic/  that trajectory, its lambda-returns with the slow
                critic, the exploration actor's and critic's losses and gradients;
  expl_weight/, expl_slot/, expl_metric/  one whole update of the behaviour (`train`): every
                weight and Adam slot after it, and its metrics.
"""
from __future__ import annotations

import numpy as np

from tests.reference.cases import (GradientRecorder, Recorder, by_owner, gradients,
                                   normaliser_results, owner, swapped)


def layer_map(expl, mlp_layers) -> dict:
  """The behaviour's layers under the names expl_paper.py gives the paper's.

  mlp_layers: (prefix, our MLP) -> {name: layer} (ours.py).
  """
  layers = {}
  if hasattr(expl, 'heads'):  # Plan2Explore's ensemble.
    for i, head in enumerate(expl.heads):
      layers.update(mlp_layers(f'expl/head{i}', head))
  else:  # ModelLoss's single head.
    layers.update(mlp_layers('expl/head', expl.head))
  ac = expl.ac
  layers.update(mlp_layers('expl_actor', ac.actor))
  layers.update(mlp_layers('expl_critic', ac.critic))
  layers.update(mlp_layers('expl_slow_critic', ac.target_critic))
  return layers


def optimizer_state(prefix: str, opts: dict, weights: dict) -> dict:
  """Our Adam's slots for every weight an optimizer of `opts` owns, and each one's step count."""
  res = {}
  for name, var in weights.items():
    if owner(name) in opts:
      adam = opts[owner(name)].opt
      index = adam._get_variable_index(var)
      res[f'{prefix}/m/{name}'] = adam._momentums[index]
      res[f'{prefix}/v/{name}'] = adam._velocities[index]
  for name, opt in opts.items():
    res[f'{prefix}/iterations/{name}'] = opt.opt.iterations
  return res


def quantities(agent, batch: dict, weights: dict, tf) -> dict:
  wm, ex, config = agent.wm, agent.expl, agent.config
  ac = ex.ac
  res = {}
  data = wm.preprocess(batch)
  _, outs, _ = wm.loss(data)

  recorder = GradientRecorder(by_owner(weights, 'expl'))
  with swapped(ex, opt=recorder), swapped(ac, train=lambda *args, **kwargs: {}):
    ex.train(wm, outs, data)
  res['expl_loss/loss'] = recorder.loss
  res.update(gradients('expl_loss/grad', recorder.named, recorder.grads))

  norms = {k: Recorder(getattr(ex, k)) for k in ('intr_norm', 'extr_norm') if hasattr(ex, k)}
  actor_vars, critic_vars = by_owner(weights, 'expl_actor'), by_owner(weights, 'expl_critic')
  with swapped(ex, **norms):
    with tf.GradientTape() as tape:
      seq = wm.imagine(ac.actor, outs['post'], data['is_terminal'], config.imag_horizon)
      reward = ex.reward(wm, seq)
      seq['reward'], _ = ac.rewnorm(reward)
      target, _ = ac.target(seq)
      loss, mets = ac.actor_loss(seq, target)
  res.update(gradients('expl_actor/grad', actor_vars, tape.gradient(loss, list(actor_vars.values()))))
  res['expl_actor/loss'] = loss
  res.update({f'expl_actor/metric/{k}': v for k, v in mets.items()})
  res['expl_reward/mixed'] = reward
  res.update(normaliser_results(norms.get('intr_norm'), norms.get('extr_norm')))
  if 'intr_norm' in norms:  # The disagreement the normaliser saw is the public one.
    disag = ex.disagreement(seq['feat'], seq['action'])
    np.testing.assert_array_equal(disag, res['expl_reward/disag'])
  for key in ('feat', 'action', 'value'):
    res[f'expl_imag/{key}'] = seq[key]
  res['expl_imag/target'] = target
  with tf.GradientTape() as tape:
    loss, mets = ac.critic_loss(seq, target)
  res['expl_critic/loss'] = loss
  res.update({f'expl_critic/metric/{k}': v for k, v in mets.items()})
  res.update(gradients('expl_critic/grad', critic_vars,
                    tape.gradient(loss, list(critic_vars.values()))))

  # One update.
  opts = {'expl': ex.opt, 'expl_actor': ac.actor_opt, 'expl_critic': ac.critic_opt}
  metrics = ex.train(wm, outs, data)
  res.update({f'expl_metric/{k}': v for k, v in metrics.items()})
  for name, var in weights.items():
    if not name.startswith('expl'):
      continue
    res[f'expl_weight/{name}'] = var
  res.update(optimizer_state('expl_slot', opts, weights))
  return {k: np.asarray(v) for k, v in res.items()}
