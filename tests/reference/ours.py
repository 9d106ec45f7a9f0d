"""Our side of the parity harness: weights, batch, config and every compared quantity.

Run (from the repository root): `python -m tests.reference.ours WORKDIR CASE [CASE ...]`.
For each case it writes WORKDIR/CASE/inputs.npz (weights by layer name, the batch),
case.json (the agent's config keys and spaces, for paper.py) and ours.npz (the quantities).
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys

import numpy as np

from tests.reference import expl_ours
from tests.reference.cases import BY_NAME, Case, gradients, kl_results, owner, variables

CLIP = 1e-6  # The truncated-normal sample's straight-through clip (both codes use 1e-6).


def layer_map(agent) -> dict:
  """Our layers under the paper's names (its modules' `get` names), e.g. `rssm/img_out_0`."""
  layers = {}
  enc, dec, rssm = agent.wm.encoder, agent.wm.heads['decoder'], agent.wm.rssm

  def add(name, layer):
    if layer is not None:
      layers[name] = layer

  for i, (conv, norm) in enumerate(zip(enc.convs, enc.conv_norms)):
    add(f'encoder/conv{i}', conv)
    add(f'encoder/convnorm{i}', norm)
  if enc.mlp is not None:
    for i, (dense, norm) in enumerate(zip(enc.mlp.denses, enc.mlp.norms)):
      add(f'encoder/dense{i}', dense)
      add(f'encoder/densenorm{i}', norm)
  for name in ('img_in', 'img_in_norm', 'obs_out', 'obs_out_norm', 'obs_dist'):
    add(f'rssm/{name}', getattr(rssm, name))
  # The paper's RSSM is an ensemble (of one, in its configs) of prior layers.
  for name in ('img_out', 'img_out_norm', 'img_dist'):
    add(f'rssm/{name}_0', getattr(rssm, name))
  add('rssm/gru', rssm.cell.layer)
  add('rssm/gru_norm', rssm.cell.norm)
  add('decoder/convin', dec.convin)
  for i, (conv, norm) in enumerate(zip(dec.convs, dec.conv_norms)):
    add(f'decoder/conv{i}', conv)
    add(f'decoder/convnorm{i}', norm)
  if dec.mlp is not None:
    for i, (dense, norm) in enumerate(zip(dec.mlp.denses, dec.mlp.norms)):
      add(f'decoder/dense{i}', dense)
      add(f'decoder/densenorm{i}', norm)
    for key, head in dec.mlp_heads.items():
      add(f'decoder/dense_{key}/out', head.out)
  mlps = {'reward': agent.wm.heads['reward'], 'discount': agent.wm.heads.get('discount'),
          'actor': agent.ac.actor, 'critic': agent.ac.critic,
          'slow_critic': agent.ac.target_critic}
  for prefix, mlp in mlps.items():
    if mlp is not None:
      layers.update(mlp_layers(prefix, mlp))
  if agent.expl is not None:
    layers.update(expl_ours.layer_map(agent.expl, mlp_layers))
  return layers


def mlp_layers(prefix: str, mlp) -> dict:
  """An MLP head's layers under the paper's names: `dense0`, `norm0`, ..., `out/out`, `out/std`."""
  layers = {}
  for i, (dense, norm) in enumerate(zip(mlp.hidden.denses, mlp.hidden.norms)):
    layers[f'{prefix}/dense{i}'] = dense
    if norm is not None:
      layers[f'{prefix}/norm{i}'] = norm
  layers[f'{prefix}/out/out'] = mlp.head.out
  if mlp.head.std is not None:
    layers[f'{prefix}/out/std'] = mlp.head.std
  return layers


@contextlib.contextmanager
def modes_for_samples():
  """Makes every `sample()` of our distributions its mode, keeping the sample's gradient path.

  One-hot: the mode with the straight-through gradient (our `mode` already has it). Normal:
  the mean (the reparameterised sample at zero noise). Truncated normal: the mode, clipped
  straight-through as a sample is. A test hook in this process only; the library is unchanged.
  """
  import tensorflow as tf
  from dreamerv2_tf import dists

  def trunc(self, noise=None):
    del noise
    mode = self.mode()
    clipped = tf.clip_by_value(mode, -1 + CLIP, 1 - CLIP)
    return mode - tf.stop_gradient(mode) + tf.stop_gradient(clipped)

  patches = {dists.OneHotDist: lambda self, noise=None: self.mode(),
             dists.NormalDist: lambda self, noise=None: self.mode(),
             dists.TruncNormalDist: trunc}
  saved = {cls: cls.sample for cls in patches}
  try:
    for cls, fn in patches.items():
      cls.sample = fn
    yield
  finally:
    for cls, fn in saved.items():
      cls.sample = fn


def make_inputs(case: Case):
  """Spaces and a batch with an episode start inside row 1 (after a terminal step)."""
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  obs_space, act_space = make_spaces(image=case.image, vector=case.vector,
                                     actions=case.actions, continuous=case.continuous)
  batch = make_batch(obs_space, act_space, case.batch, case.length, case.seed)
  mid = case.length // 2
  batch['is_terminal'][1, mid - 1] = batch['is_last'][1, mid - 1] = True
  batch['is_first'][1, mid] = True
  batch['action'][1, mid] = 0
  return obs_space, act_space, batch


AGENT_KEYS = ('clip_rewards', 'grad_heads', 'pred_discount', 'rssm', 'encoder', 'decoder',
              'reward_head', 'discount_head', 'loss_scales', 'kl', 'model_opt', 'actor', 'critic',
              'actor_opt', 'critic_opt', 'discount', 'discount_lambda', 'imag_horizon',
              'actor_grad', 'actor_grad_mix', 'actor_ent', 'slow_target', 'slow_target_update',
              'slow_target_fraction', 'slow_baseline', 'reward_norm', 'expl_behavior',
              'expl_intr_scale', 'expl_extr_scale', 'expl_opt', 'expl_head', 'expl_reward_norm',
              'disag_target', 'disag_log', 'disag_models', 'disag_offset', 'disag_action_cond',
              'expl_model_loss')


def run(case: Case, out: pathlib.Path) -> None:
  import keras
  import tensorflow as tf
  from dreamerv2_tf import Agent, load_config

  out.mkdir(parents=True, exist_ok=True)
  keras.utils.set_random_seed(case.seed)
  # Eager train step: tracing it would take most of the harness's time (the paper's side too).
  config = load_config(case.presets, [*case.overrides, '--precision', '32', '--jit', 'false'])
  obs_space, act_space, batch = make_inputs(case)
  agent = Agent(config, obs_space, act_space)
  agent.step.assign(case.step)
  layers = layer_map(agent)
  weights = variables(layers)
  flat = {k: v for k, v in config.flat.items() if k.split('.')[0] in AGENT_KEYS}
  spec = {'case': case.name, 'config': flat, 'step': case.step,
          'obs': {k: list(v.shape) for k, v in obs_space.spaces.items()},
          'data_keys': [k for k in obs_space.spaces
                        if k not in ('reward', 'is_first', 'is_last', 'is_terminal')],
          'actions': case.actions, 'continuous': case.continuous}
  np.savez(out / 'inputs.npz', **{f'w/{k}': v.numpy() for k, v in weights.items()},
           **{f'batch/{k}': v for k, v in batch.items()})
  with modes_for_samples():
    if agent.expl is not None:  # An exploration case compares the behaviour only.
      values, spec['kl_free'] = expl_ours.quantities(agent, batch, weights, tf), None
    else:
      values, spec['kl_free'] = quantities(agent, batch, weights, tf)
  (out / 'case.json').write_text(json.dumps(spec, indent=1))
  np.savez(out / 'ours.npz', **values)


def _np(tree: dict, prefix: str) -> dict:
  return {f'{prefix}/{k}': np.asarray(v) for k, v in tree.items()}


def quantities(agent, batch: dict, weights: dict, tf) -> tuple[dict, float]:
  """Every compared quantity by name (see compare.py for the names' meaning)."""
  wm, ac, config = agent.wm, agent.ac, agent.config
  res = {}
  data = wm.preprocess(batch)
  model_vars = {k: v for k, v in weights.items() if owner(k) == 'model'}
  with tf.GradientTape() as tape:
    model_loss, outs, metrics = wm.loss(data)
  grads = tape.gradient(model_loss, list(model_vars.values()))
  res.update(gradients('grad_model', model_vars, grads))
  res['embed'] = outs['embed']
  res.update(_np(outs['post'], 'post'))
  res.update(_np(outs['prior'], 'prior'))
  res['loss/model'] = model_loss
  res.update({f'loss/{k[:-5]}': v for k, v in metrics.items() if k.endswith('_loss')})
  res.update({f'wm_metric/{k}': v for k, v in metrics.items() if not k.endswith('_loss')})
  for key, dist in wm.heads['decoder'](outs['feat']).items():
    res[f'decoder/{key}'] = dist.mode()
  init = {k: v[:, 2] for k, v in outs['post'].items()}
  res.update(_np(wm.rssm.imagine(data['action'][:, 3:], init), 'openl'))
  if wm.heads['decoder'].cnn_keys:
    scales = decoder_bias_scales(wm.heads['decoder'], outs['feat'], data, tf)
    for name, (abs_sum, total) in scales.items():
      np.testing.assert_allclose(total, res[f'grad_model/{name}'], rtol=1e-4, atol=1e-6)
      res[f'diag/abs_sum/{name}'] = abs_sum

  # KL balancing and free nats on the same posteriors and priors, with their gradients.
  _, kl_value = wm.rssm.kl_loss(outs['post'], outs['prior'], **dict(config.kl.to_dict()))
  kl_free = float(np.median(kl_value))  # Free nats between the smallest and largest KL.
  res.update(kl_results(wm.rssm, outs['post'], outs['prior'], kl_free))

  # Actor-critic on imagined trajectories from every posterior state, per actor gradient.
  actor_vars = {k: v for k, v in weights.items() if owner(k) == 'actor'}
  critic_vars = {k: v for k, v in weights.items() if owner(k) == 'critic'}
  grad, seq = ac.grad, None
  for mode in ('reinforce', 'dynamics', 'both'):
    ac.grad = mode
    with tf.GradientTape() as tape:
      seq_m = wm.imagine(ac.actor, outs['post'], data['is_terminal'], config.imag_horizon)
      seq_m['reward'], _ = ac.rewnorm(wm.heads['reward'](seq_m['feat']).mode())
      target_m, _ = ac.target(seq_m)
      loss, mets = ac.actor_loss(seq_m, target_m)
    res[f'actor_{mode}/loss'] = loss
    res.update(_np(mets, f'actor_{mode}/metric'))
    grads = tape.gradient(loss, list(actor_vars.values()))
    res.update(gradients(f'actor_{mode}/grad', actor_vars, grads))
    if seq is None:
      seq, target = seq_m, target_m
  ac.grad = grad
  for key in ('deter', 'stoch', 'logits', 'mean', 'std', 'feat', 'action', 'discount', 'weight',
              'reward', 'value'):
    if key in seq:
      res[f'imag/{key}'] = seq[key]
  res['imag/target'] = target
  with tf.GradientTape() as tape:
    loss, mets = ac.critic_loss(seq, target)
  res['critic/loss'] = loss
  res.update(_np(mets, 'critic/metric'))
  res.update(gradients('critic/grad', critic_vars, tape.gradient(loss, list(critic_vars.values()))))

  # One whole train step: every weight and optimizer slot afterwards, and the metrics.
  metrics = agent.train(batch)
  res.update({f'train_metric/{k}': v for k, v in metrics.items()})
  res.update({f'train_weight/{k}': v for k, v in weights.items()})
  opts = {'model': wm.opt, 'actor': ac.actor_opt, 'critic': ac.critic_opt}
  res.update(expl_ours.optimizer_state('train_slot', opts, weights))
  return {k: np.asarray(v) for k, v in res.items()}, kl_free


def decoder_bias_scales(decoder, feat, data: dict, tf) -> dict:
  """Per transposed convolution of the image decoder: (sum |dL/dy|, sum dL/dy) per channel.

  The gradient of a convolution's bias is the sum of dL/dy over all B*T*H*W output positions
  (L: the image loss, the only one the decoder's layers feed). Float32 rounding of a sum grows
  with the sum of the terms' magnitudes, not with the sum itself, which cancels: compare.py
  measures these bias gradients against sum |dL/dy| (docs/parity.md). The decoder's layers
  run one by one here, with Keras' own kernels, to reach each output y; the second value is
  the bias gradient again, checked against the one the whole model loss gave.
  """
  last = len(decoder.convs) - 1
  target = tf.concat([data[k] for k in decoder.cnn_keys], -1)
  with tf.GradientTape() as tape:
    x = decoder.convin(feat)
    x = tf.reshape(x, [-1, 1, 1, x.shape[-1]])
    outputs = []
    for i, (conv, norm) in enumerate(zip(decoder.convs, decoder.conv_norms)):
      x = conv(x)
      outputs.append(x)
      if i < last:
        x = decoder._act(norm(x) if norm is not None else x)
    mean = tf.reshape(x, target.shape)
    loss = tf.reduce_mean(tf.reduce_sum(0.5 * (target - mean) ** 2, [-3, -2, -1]))
  grads = tape.gradient(loss, outputs)
  return {f'decoder/conv{i}/bias': (np.abs(g.numpy()).astype(np.float64).sum((0, 1, 2)),
                                    g.numpy().astype(np.float64).sum((0, 1, 2)))
          for i, g in enumerate(grads)}


def setup_tensorflow():
  """One thread per op pool: both sides run alike, and the shared CPU stays lightly loaded.

  The package first, as a user's program imports it: on CPUs where TensorFlow leaves oneDNN
  off (AVX2 only) it turns it on, as paper.py does for the paper's side. Importing TensorFlow
  first had this side on Eigen's kernels and the paper's on oneDNN's when run from
  scripts/parity.py (pytest's process had imported the package, which set it for both).
  """
  import dreamerv2_tf  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def main(argv: list[str]) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  workdir, names = pathlib.Path(argv[0]), argv[1:]
  setup_tensorflow()
  for name in names:
    run(BY_NAME[name], workdir / name)


if __name__ == '__main__':
  main(sys.argv[1:])
