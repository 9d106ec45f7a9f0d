"""Analytic FLOP counts of a train step, for the benchmark's GFLOP/s figures.

One multiply-add counts as 2 FLOPs; only matmuls and convolutions are counted (activations,
norms and distributions are a few percent). The backward pass of a layer is counted as twice its
forward pass.
"""
from __future__ import annotations

import numpy as np


def _dense(layer) -> float:
  return 2.0 * float(np.prod(layer.kernel.shape))


def stack_flops(stack) -> float:
  """FLOPs per sample of a `DenseStack`."""
  return sum(_dense(d) for d in stack.denses)


def mlp_flops(mlp) -> float:
  """FLOPs per sample of an `MLP` head (hidden layers and distribution outputs)."""
  head = _dense(mlp.head.out) + (_dense(mlp.head.std) if mlp.head.std is not None else 0.0)
  return stack_flops(mlp.hidden) + head


def encoder_flops(encoder) -> float:
  total = 0.0
  if encoder.cnn_keys:
    h, w = encoder.shapes[encoder.cnn_keys[0]][:2]
    for conv in encoder.convs:
      k1, k2, cin, cout = conv.kernel.shape
      h, w = (h - k1) // 2 + 1, (w - k2) // 2 + 1
      total += 2.0 * k1 * k2 * cin * cout * h * w
  if encoder.mlp is not None:
    total += stack_flops(encoder.mlp)
  return total


def decoder_flops(decoder) -> float:
  total = 0.0
  if decoder.cnn_keys:
    total += _dense(decoder.convin)
    size = 1
    for conv in decoder.convs:
      k1, k2, cout, cin = conv.kernel.shape  # Conv2DTranspose kernels are (k, k, out, in).
      total += 2.0 * k1 * k2 * cin * cout * size * size  # Every input pixel scatters a patch.
      size = (size - 1) * 2 + k1
  if decoder.mlp is not None:
    total += stack_flops(decoder.mlp) + sum(_dense(h.out) for h in decoder.mlp_heads.values())
  return total


def rssm_flops(rssm) -> tuple[float, float]:
  """(img_step, obs_step) FLOPs per sample; obs_step includes its img_step."""
  img = sum(_dense(l) for l in (rssm.img_in, rssm.cell.layer, rssm.img_out, rssm.img_dist))
  obs = img + _dense(rssm.obs_out) + _dense(rssm.obs_dist)
  return img, obs


def train_step_flops(agent, batch: int, length: int) -> dict:
  """FLOPs of one `Agent.train` call on a `[batch, length]` batch, by phase."""
  wm, ac = agent.wm, agent.ac
  n, horizon = batch * length, agent.config.imag_horizon
  img, obs = rssm_flops(wm.rssm)
  heads = {k: (decoder_flops(h) if k == 'decoder' else mlp_flops(h)) for k, h in wm.heads.items()}
  wm_fwd = n * (encoder_flops(wm.encoder) + obs + sum(heads.values()))
  actor, critic = mlp_flops(ac.actor), mlp_flops(ac.critic)
  scalar_heads = sum(v for k, v in heads.items() if k != 'decoder')
  imag_fwd = n * (horizon * (img + actor) + (horizon + 1) * (scalar_heads + critic))
  ac_fwd, ac_bwd = _actor_critic_update(ac.grad, n, horizon, actor, critic, imag_fwd)
  phases = {'world_model_forward': wm_fwd, 'world_model_backward': 2 * wm_fwd,
            'imagination_forward': imag_fwd + ac_fwd, 'actor_critic_backward': ac_bwd}
  if agent.expl is not None:
    phases['exploration'] = exploration_flops(agent, n, img, heads)
  phases['total'] = sum(phases.values())
  return phases


def exploration_flops(agent, n: int, img: float, heads: dict) -> float:
  """FLOPs of the exploration behaviour's share of a train step (expl.py): its heads' update
  on the replayed features, then a second imagination and actor-critic update whose reward
  runs the heads on every imagined state (REINFORCE for discrete actions, as the task's)."""
  expl, horizon = agent.expl, agent.config.imag_horizon
  members = getattr(expl, 'heads', None) or [expl.head]  # Plan2Explore's ensemble, or one head
  member = mlp_flops(members[0])
  train = 3 * n * len(members) * member  # forward + backward on the replayed sequences
  actor, critic = mlp_flops(expl.ac.actor), mlp_flops(expl.ac.critic)
  scalar_heads = sum(v for k, v in heads.items() if k not in ('decoder', 'reward'))
  reward = len(members) * member + (heads['reward'] if agent.config.expl_extr_scale else 0.0)
  imag = n * (horizon * (img + actor) + (horizon + 1) * (scalar_heads + critic + reward))
  ac_fwd, ac_bwd = _actor_critic_update(expl.ac.grad, n, horizon, actor, critic, imag)
  return train + imag + ac_fwd + ac_bwd


def _actor_critic_update(grad: str, n: int, horizon: int, actor: float, critic: float,
                         imag: float) -> tuple[float, float]:
  """(forward, backward) FLOPs of an actor-critic update after an imagination of `imag`.

  The actor loss reuses the imagination's actor outputs and the slow critic's values as its
  baseline; only the critic loss runs a network again, on H states.
  """
  fwd = n * horizon * critic
  if grad == 'reinforce':
    return fwd, 2 * n * ((horizon - 1) * actor + horizon * critic)
  return fwd, 2 * (imag + fwd)  # Dynamics backprop differentiates through the imagination too.
