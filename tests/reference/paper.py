"""The paper's side of the parity harness: its agent on our weights, batch and config.

Run (from the repository root, after ours.py wrote WORKDIR/CASE):
`python -m tests.reference.paper WORKDIR CASE [CASE ...]`; writes WORKDIR/CASE/paper.npz.

The paper's package (`pip install --no-deps dreamerv2==2.2.0`) is imported unmodified on
TensorFlow 2.21 with tf_keras. What this process adjusts, in itself only:
- `TF_USE_LEGACY_KERAS=1` before TensorFlow is imported (the paper's code is Keras 2 code);
- `tensorflow.keras.mixed_precision.experimental`, gone from tf_keras, is an alias of
  `tensorflow.keras.mixed_precision` (the paper's nets.py only calls `global_policy()` on it);
- a stand-in `gym` module: `common/envs.py` imports gym at module level, and the agent only
  needs spaces with `shape` (and `n` for one-hot actions);
- the package's folder on `sys.path`: its modules import each other as `common`, `agent`, as
  its train.py arranges.
- every optimizer is `tf.keras.optimizers.legacy.Adam`, the OptimizerV2 class the paper ran on
  (under tf_keras 2.21 `tf.optimizers.Adam` is the newer Keras 2 class; `--adam new` keeps it);
- samples are their modes (see `modes_for_samples`), and the REINFORCE term stops the action's
  gradient as the paper's final code does (its repository after 2.2.0, commit 6504715).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import pathlib
import sys
import types

import numpy as np

from tests.reference import expl_paper
from tests.reference.cases import EXPL_BEHAVIORS, gradients, kl_results, owner, variables

INSTALL = 'pip install --no-deps dreamerv2==2.2.0'


def import_reference():
  """Imports the paper's `agent` and `common` modules; one-line ImportError if not installed."""
  os.environ['TF_USE_LEGACY_KERAS'] = '1'
  from dreamerv2_tf import onednn
  onednn.enable()  # The kernels this port gets, so that the two are compared alike.
  if 'tensorflow' in sys.modules and 'keras' in sys.modules and 'tf_keras' not in sys.modules:
    raise RuntimeError('the paper code needs a process whose TensorFlow was imported with '
                       'TF_USE_LEGACY_KERAS=1')
  spec = importlib.util.find_spec('dreamerv2')
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f'the paper code (package dreamerv2) is not installed: run `{INSTALL}`')
  folder = pathlib.Path(list(spec.submodule_search_locations)[0])
  if not (folder / 'agent.py').exists() or not (folder / 'common' / 'nets.py').exists():
    raise ImportError(f'{folder} is not the paper code 2.2.0: run `{INSTALL}`')
  import tensorflow as tf
  # TFP logs a warning per instance of the paper's OneHotDist (it redefines __init__); the
  # paper's train.py silences the root logger the same way.
  logging.getLogger().setLevel('ERROR')
  import tf_keras  # noqa: F401 (the paper's Keras; fails clearly if tf-keras is missing)
  sys.modules.setdefault('tensorflow.keras.mixed_precision.experimental',
                         tf.keras.mixed_precision)
  if 'gym' not in sys.modules:
    sys.modules['gym'] = _gym_stand_in()
    sys.modules['gym.spaces'] = sys.modules['gym'].spaces
  if str(folder) not in sys.path:
    sys.path.insert(0, str(folder))
  import agent
  import common
  return agent, common, folder


class Box:
  """The part of `gym.spaces.Box` the paper's agent reads: `shape`, and `n` for one-hot actions."""

  def __init__(self, low, high, shape, dtype=np.float32, n=None):
    self.low, self.high, self.shape, self.dtype = low, high, tuple(shape), dtype
    if n is not None:
      self.n = n


def _gym_stand_in():
  gym = types.ModuleType('gym')
  gym.__doc__ = 'Stand-in for the parity harness: the paper agent needs spaces only.'
  gym.spaces = types.ModuleType('gym.spaces')
  gym.spaces.Box = Box
  return gym


def modes_for_samples(tf, common) -> None:
  """Makes the paper's samples their modes, keeping each sample's gradient path.

  One-hot: the mode plus `probs - sg(probs)` (its straight-through sample at the mode).
  Truncated normal: the mode, clipped straight-through as its `sample` does. Gaussian latents
  (`MultivariateNormalDiag`, made in `EnsembleRSSM.get_dist`): the mean. Each handles the
  `sample_shape` TFP's `Independent` passes.
  """
  def lead(x, sample_shape):
    shape = tf.cast(tf.reshape(sample_shape, [-1]), tf.int32)
    return tf.broadcast_to(x, tf.concat([shape, tf.shape(x)], 0))

  def onehot(self, sample_shape=(), seed=None):
    mode = self.mode()
    probs = tf.cast(self.probs_parameter(), mode.dtype)
    return lead(mode + probs - tf.stop_gradient(probs), sample_shape)

  def trunc(self, sample_shape=(), seed=None):
    mode = self.mode()
    clipped = tf.clip_by_value(mode, self.low + self._clip, self.high - self._clip)
    return lead(mode - tf.stop_gradient(mode) + tf.stop_gradient(clipped), sample_shape)

  get_dist = common.EnsembleRSSM.get_dist

  def gaussian_mode(self, state, ensemble=False):
    dist = get_dist(self, state, ensemble)
    if not self._discrete:
      dist.sample = lambda sample_shape=(), seed=None: lead(dist.mode(), sample_shape)
    return dist

  common.OneHotDist.sample = onehot
  common.TruncNormalDist.sample = trunc
  common.EnsembleRSSM.get_dist = gaussian_mode


def stop_reinforce_action(tf, agent, modes=('reinforce',)) -> None:
  """The REINFORCE term takes the action as a constant for `actor_grad` in `modes`.

  ('reinforce',) is the paper's final code (its repository after 2.2.0: `tf.stop_gradient` on
  the action in the reinforce branch only); () is 2.2.0 as released; ('reinforce', 'both') is
  ours. Only the action inside `actor_loss` changes (dynamics gradients flow through `feat`).
  """
  original = getattr(agent.ActorCritic, '_parity_original_actor_loss', None)
  if original is None:
    original = agent.ActorCritic._parity_original_actor_loss = agent.ActorCritic.actor_loss

  def actor_loss(self, seq, target):
    if self.config.actor_grad in modes:
      seq = {**seq, 'action': tf.stop_gradient(seq['action'])}
    return original(self, seq, target)
  agent.ActorCritic.actor_loss = actor_loss


def reference_config(common, folder: pathlib.Path, ours: dict):
  """The paper's config: its defaults with our agent keys (each must exist in its defaults)."""
  import ruamel.yaml
  defaults = ruamel.yaml.YAML(typ='safe', pure=True).load(
      (folder / 'configs.yaml').read_text())['defaults']
  flat = dict(common.Config(defaults).flat)
  # Ours only: the GRU's layer norm (the paper's is always on), same-weight fast kernels.
  ours = dict(ours)
  if not ours.pop('rssm.gru_norm'):
    raise ValueError('rssm.gru_norm false has no counterpart in the paper code')
  ours.pop('encoder.fast_conv', None)
  if ours.get('actor.dist') == 'trunc_normal_exact':
    raise ValueError('actor.dist trunc_normal_exact has no counterpart in the paper code '
                     '(its trunc_normal takes TensorFlow\'s sampler gradient)')
  ours.pop('decoder.fast_deconv', None)
  missing = sorted(k for k in ours if k not in flat)
  if missing:
    raise ValueError(f'our config keys {missing} have no counterpart in the paper config')
  flat.update(ours)
  # Its Agent looks the behaviour up as a class of its expl module.
  flat['expl_behavior'] = expl_paper.CLASS_NAMES.get(flat['expl_behavior'], flat['expl_behavior'])
  if flat['rssm.ensemble'] != 1:
    raise ValueError('the paper config must have rssm.ensemble 1')
  nested = {}
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = nested
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return common.Config(nested)


def load_weights(agnt, common, inputs) -> dict:
  """Assigns our weights (`w/<name>` arrays of `inputs`) to the paper agent's built layers.

  Returns the paper's variables by name; names and shapes must match one to one.
  """
  weights = variables(layer_map(agnt, common))
  ours = {k[2:] for k in inputs.files if k.startswith('w/')}
  if set(weights) != ours:
    raise ValueError(f'layer names differ: ours only {sorted(ours - set(weights))}, '
                     f'paper only {sorted(set(weights) - ours)}')
  for name, var in weights.items():
    value = inputs[f'w/{name}']
    if tuple(var.shape) != value.shape:
      raise ValueError(f'{name}: paper shape {tuple(var.shape)}, ours {value.shape}')
    var.assign(value)
  return weights


def layer_map(agnt, common) -> dict:
  """The paper's layers by their `get` names under each network, e.g. `rssm/img_out_0`."""
  wm, ac = agnt.wm, agnt._task_behavior
  roots = {'encoder': wm.encoder, 'rssm': wm.rssm, 'decoder': wm.heads['decoder'],
           'reward': wm.heads['reward'], 'discount': wm.heads.get('discount'),
           'actor': ac.actor, 'critic': ac.critic, 'slow_critic': ac._target_critic}
  if agnt._expl_behavior is not ac:
    roots.update(expl_paper.roots(agnt))
  layers = {}

  def walk(prefix, module):
    for name, sub in getattr(module, '_modules', {}).items():
      if isinstance(sub, common.NormLayer):
        if sub._layer is not None:
          layers[f'{prefix}/{name}'] = sub._layer
      elif isinstance(sub, common.Module):
        walk(f'{prefix}/{name}', sub)
      else:
        layers[f'{prefix}/{name}'] = sub
  for prefix, module in roots.items():
    if module is not None:
      walk(prefix, module)
  layers['rssm/gru'] = wm.rssm._cell._layer
  if wm.rssm._cell._norm:
    layers['rssm/gru_norm'] = wm.rssm._cell._norm
  return layers


def run(case_dir: pathlib.Path, adam: str = 'legacy') -> None:
  agent, common, folder = import_reference()
  import tensorflow as tf
  spec = json.loads((case_dir / 'case.json').read_text())
  inputs = np.load(case_dir / 'inputs.npz')
  batch = {k[6:]: inputs[k] for k in inputs.files if k.startswith('batch/')}
  config = reference_config(common, folder, spec['config'])
  modes_for_samples(tf, common)
  stop_reinforce_action(tf, agent, ('reinforce', 'both'))
  # Data keys first: the paper's encoder reads the batch shape from the first space.
  keys = spec['data_keys'] + [k for k in spec['obs'] if k not in spec['data_keys']]
  obs_space = {k: Box(0, 1, spec['obs'][k]) for k in keys}
  n = spec['actions']
  act_space = {'action': Box(-1, 1, (n,), n=None if spec['continuous'] else n)}
  agnt = agent.Agent(config, obs_space, act_space, spec['step'])
  if adam == 'legacy':
    for opt, block in ((agnt.wm.model_opt, config.model_opt),
                       (agnt._task_behavior.actor_opt, config.actor_opt),
                       (agnt._task_behavior.critic_opt, config.critic_opt)):
      opt._opt = tf.keras.optimizers.legacy.Adam(block.lr, epsilon=block.eps)
  data = {k: tf.constant(v) for k, v in batch.items()}
  # One forward pass creates the paper's layers; then our weights go in, name by name.
  _, _, outs, _ = agnt.wm.loss(data)
  for net in (agnt._task_behavior.actor, agnt._task_behavior.critic,
              agnt._task_behavior._target_critic):
    net(outs['feat'])
  expl = spec['config']['expl_behavior'] in EXPL_BEHAVIORS
  if expl:
    expl_paper.build(agnt, outs, data, config)
    if adam == 'legacy':
      expl_paper.legacy_adam(agnt, config, tf)
  weights = load_weights(agnt, common, inputs)
  if expl:  # An exploration case compares the behaviour only.
    values = expl_paper.quantities(agnt, data, weights, tf)
  else:
    values = quantities(agnt, agent, data, weights, spec, tf)
  np.savez(case_dir / 'paper.npz', **{k: np.asarray(v) for k, v in values.items()})


def _named(tree: dict, prefix: str) -> dict:
  return {f'{prefix}/{"logits" if k == "logit" else k}': v for k, v in tree.items()}


def quantities(agnt, agent, data, weights, spec, tf) -> dict:
  wm, ac = agnt.wm, agnt._task_behavior
  res = {}
  model_vars = {k: v for k, v in weights.items() if owner(k) == 'model'}
  with tf.GradientTape() as tape:
    model_loss, _, outs, metrics = wm.loss(data)
  res.update(gradients('grad_model', model_vars, tape.gradient(model_loss, list(model_vars.values()))))
  res['embed'] = outs['embed']
  res.update(_named(outs['post'], 'post'))
  res.update(_named(outs['prior'], 'prior'))
  res['loss/model'] = model_loss
  res.update({f'loss/{k[:-5]}': v for k, v in metrics.items() if k.endswith('_loss')})
  res.update({f'wm_metric/{k}': v for k, v in metrics.items() if not k.endswith('_loss')})
  for key, dist in wm.heads['decoder'](outs['feat']).items():
    res[f'decoder/{key}'] = dist.mode()
  init = {k: v[:, 2] for k, v in outs['post'].items()}
  res.update(_named(wm.rssm.imagine(data['action'][:, 3:], init), 'openl'))

  res.update(kl_results(wm.rssm, outs['post'], outs['prior'], spec['kl_free']))

  actor_vars = {k: v for k, v in weights.items() if owner(k) == 'actor'}
  critic_vars = {k: v for k, v in weights.items() if owner(k) == 'critic'}
  reward_fn = lambda seq: wm.heads['reward'](seq['feat']).mode()
  config, seq = ac.config, None
  # (name, actor_grad, modes whose REINFORCE action is a constant)
  variants = [('actor_reinforce', 'reinforce', ('reinforce',)),
              ('actor_dynamics', 'dynamics', ()),
              ('actor_both', 'both', ('reinforce', 'both')),
              ('actor_both_final', 'both', ('reinforce',)),
              ('actor_reinforce_2.2.0', 'reinforce', ())]
  for name, mode, stop in variants:
    ac.config = config.update({'actor_grad': mode})
    stop_reinforce_action(tf, agent, stop)
    with tf.GradientTape() as tape:
      seq_m = wm.imagine(ac.actor, outs['post'], data['is_terminal'], config.imag_horizon)
      seq_m['reward'], _ = ac.rewnorm(reward_fn(seq_m))
      target_m, _ = ac.target(seq_m)
      loss, mets = ac.actor_loss(seq_m, target_m)
    res[f'{name}/loss'] = loss
    res.update({f'{name}/metric/{k}': v for k, v in mets.items()})
    res.update(gradients(f'{name}/grad', actor_vars, tape.gradient(loss, list(actor_vars.values()))))
    if seq is None:
      seq, target = seq_m, target_m
  ac.config = config
  stop_reinforce_action(tf, agent, ('reinforce', 'both'))
  for key in ('deter', 'stoch', 'logit', 'mean', 'std', 'feat', 'action', 'discount', 'weight',
              'reward'):
    if key in seq:
      res[f'imag/{"logits" if key == "logit" else key}'] = seq[key]
  res['imag/value'] = ac._target_critic(seq['feat']).mode()
  res['imag/target'] = target
  with tf.GradientTape() as tape:
    loss, mets = ac.critic_loss(seq, target)
  res['critic/loss'] = loss
  res.update({f'critic/metric/{k}': v for k, v in mets.items()})
  res.update(gradients('critic/grad', critic_vars, tape.gradient(loss, list(critic_vars.values()))))

  _, metrics = type(agnt).train.python_function(agnt, data)  # Eager, as ours (see ours.py).
  res.update({f'train_metric/{k}': v for k, v in metrics.items()})
  res.update({f'train_weight/{k}': v for k, v in weights.items()})
  opts = {'model': wm.model_opt, 'actor': ac.actor_opt, 'critic': ac.critic_opt}
  res.update(expl_paper.optimizer_state('train_slot', opts, weights))
  return res


def main(argv: list[str]) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  adam = 'legacy'
  if argv and argv[0].startswith('--adam='):
    adam, argv = argv[0].split('=', 1)[1], argv[1:]
  workdir, names = pathlib.Path(argv[0]), argv[1:]
  import_reference()
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  for name in names:
    run(workdir / name, adam)


if __name__ == '__main__':
  main(sys.argv[1:])
