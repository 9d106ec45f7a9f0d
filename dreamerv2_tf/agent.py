"""The DreamerV2 agent: world model, actor-critic in imagination, and the acting policy.

Shapes: data batches are batch-major `[B, T, ...]`; imagination is time-major `[H+1, B*T, ...]`.
"""
from __future__ import annotations

from typing import Mapping

import gymnasium as gym
import numpy as np
import tensorflow as tf

from dreamerv2_tf import conv, distribute, expl, nets, precision
from dreamerv2_tf.acting import Acting
from dreamerv2_tf.noise import Noise, StepNoise
from dreamerv2_tf.optim import Optimizer
from dreamerv2_tf.returns import StreamNorm, discount_weights, lambda_return
from dreamerv2_tf.schedule import schedule

STEP_KEYS = ('reward', 'is_first', 'is_last', 'is_terminal')


def _kwargs(block) -> dict:
  return dict(block.to_dict())


def action_size(act_space: gym.Space) -> int:
  if isinstance(act_space, gym.spaces.Discrete):
    return int(act_space.n)
  if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
    return int(act_space.shape[0])
  raise ValueError(f'unsupported action space {act_space}; allowed: Discrete(n) or a 1-D Box')


class WorldModel(tf.Module):
  """Encoder, RSSM and heads (decoder, reward, discount), trained on replayed sequences."""

  def __init__(self, config, obs_space: gym.spaces.Dict, act_space: gym.Space, dtype: str,
               loss_scale: bool = False):
    super().__init__(name='world_model')
    self.config = config
    self.act_size = action_size(act_space)
    shapes = {k: tuple(v.shape) for k, v in obs_space.spaces.items()}
    self.encoder = conv.Encoder(shapes, **_kwargs(config.encoder), dtype=dtype)
    # Under XLA the sequence loops are tf.scan: XLA compiles one loop body in seconds, but
    # took over ten minutes on the unrolled atari-preset graph.
    self.rssm = nets.RSSM(self.act_size, self.encoder.embed_size, unroll=not config.xla,
                          **_kwargs(config.rssm), dtype=dtype)
    feat = self.rssm.feat_size
    self.heads = {'decoder': conv.Decoder(shapes, feat, **_kwargs(config.decoder), dtype=dtype)}
    self.heads['reward'] = nets.MLP(feat, [], **_kwargs(config.reward_head), dtype=dtype)
    if config.pred_discount:
      self.heads['discount'] = nets.MLP(feat, [], **_kwargs(config.discount_head), dtype=dtype)
    for name in config.grad_heads:
      if name not in self.heads:
        raise ValueError(f'grad_heads names {name!r}; the heads are {", ".join(self.heads)}')
    self.modules_ = [self.encoder, self.rssm, *self.heads.values()]
    self.opt = Optimizer('model', **_kwargs(config.model_opt), loss_scale=loss_scale,
                         variables=self.trainable_variables_)

  @property
  def trainable_variables_(self) -> list:
    return [v for m in self.modules_ for v in m.trainable_variables]

  def preprocess(self, obs: Mapping[str, tf.Tensor]) -> dict:
    """Images to [-0.5, 0.5] floats, rewards clipped, discount targets from `is_terminal`."""
    out = {}
    for key, value in obs.items():
      if key.startswith('log_'):
        continue
      value = tf.convert_to_tensor(value)
      if value.dtype == tf.uint8:
        value = tf.cast(value, tf.float32) / 255.0 - 0.5
      out[key] = value
    clip = {'tanh': tf.tanh, 'identity': tf.identity, 'sign': tf.sign}[self.config.clip_rewards]
    out['reward'] = clip(tf.cast(out['reward'], tf.float32))
    # Target of the discount head: 0 at terminal states, else gamma.
    out['discount'] = (1.0 - tf.cast(out['is_terminal'], tf.float32)) * self.config.discount
    return out

  def loss(self, data: dict, noise: Noise | None = None) -> tuple[tf.Tensor, dict, dict]:
    """World-model loss -ln p(x) - ln p(r) - ln p(gamma) + beta * KL on `[B, T]` data."""
    embed = self.encoder(data)
    post, prior = self.rssm.observe(embed, data['action'], data['is_first'], noise=noise)
    kl_loss, kl_value = self.rssm.kl_loss(post, prior, **_kwargs(self.config.kl))
    feat = self.rssm.get_feat(post)
    losses = {'kl': kl_loss}
    for name, head in self.heads.items():
      # Heads outside grad_heads learn from the features without shaping the representation.
      inp = feat if name in self.config.grad_heads else tf.stop_gradient(feat)
      out = head(inp)
      for key, dist in (out if isinstance(out, dict) else {name: out}).items():
        losses[key] = -tf.reduce_mean(dist.log_prob(data[key]))
    scales = self.config.loss_scales
    model_loss = tf.add_n([
        (scales[k] if k in scales else 1.0) * v for k, v in losses.items()])
    metrics = {f'{k}_loss': v for k, v in losses.items()}
    metrics['model_kl'] = tf.reduce_mean(kl_value)
    metrics['prior_ent'] = tf.reduce_mean(self.rssm.get_dist(prior).entropy())
    metrics['post_ent'] = tf.reduce_mean(self.rssm.get_dist(post).entropy())
    outputs = {'embed': embed, 'feat': feat, 'post': post, 'prior': prior, 'kl': kl_value}
    return model_loss, outputs, metrics

  def train(self, data: dict, noise: Noise | None = None) -> tuple[dict, dict]:
    with tf.GradientTape() as tape:
      model_loss, outputs, metrics = self.loss(data, noise)
    metrics.update(self.opt(tape, model_loss))
    return outputs, metrics

  def video_pred(self, data: dict, key: str, context: int = 5) -> tf.Tensor:
    """Open-loop prediction video, as in the paper: truth / model / error stacked vertically.

    The model sees `context` frames, then imagines the rest from the replayed actions alone.
    Returns `[T, 3 * H, B * W, C]` floats in [0, 1] for up to 6 sequences of `data`.
    """
    decoder = self.heads['decoder']
    data = {k: v[:6] for k, v in data.items()}
    truth = data[key] + 0.5
    embed = self.encoder(data)
    states, _ = self.rssm.observe(embed[:, :context], data['action'][:, :context],
                                  data['is_first'][:, :context])
    recon = decoder(self.rssm.get_feat(states))[key].mode()
    init = {k: v[:, -1] for k, v in states.items()}
    prior = self.rssm.imagine(data['action'][:, context:], init)
    openl = decoder(self.rssm.get_feat(prior))[key].mode()
    model = tf.clip_by_value(tf.concat([recon, openl], 1) + 0.5, 0, 1)
    error = (model - truth + 1) / 2
    video = tf.concat([truth, model, error], 2)  # [B, T, 3H, W, C]
    B, T, H, W, C = video.shape
    return tf.reshape(tf.transpose(video, [1, 2, 0, 3, 4]), [T, H, B * W, C])

  def imagine(self, actor, start: dict, is_terminal: tf.Tensor, horizon: int,
              noise: Noise | None = None) -> dict:
    """Rolls the actor out in the model from every start state, time-major `[H+1, B*T, ...]`.

    seq['action'][t] is the action that led into state t (zeros at t=0), and seq['policy'][t]
    the actor's distribution parameters that chose it: the actor loss reuses them instead of
    running the actor over the states again. seq['discount'][0] is the true discount of the
    start state from replay, later ones are the discount head's mean.
    """
    flat = lambda x: tf.reshape(x, [-1] + nets.dims(x)[2:])
    state = {k: tf.stop_gradient(flat(v)) for k, v in start.items()}
    feat = self.rssm.get_feat(state)
    rows = nets.dims(feat)[0]
    start = {**state, 'feat': feat, 'action': tf.zeros([rows, self.act_size], tf.float32),
             'policy': tf.zeros([rows, actor.head.params_size], tf.float32)}
    # Noise for the actions and the latents of every step, drawn up front (see Noise.steps).
    elems = tf.range(horizon)
    if noise is not None:
      elems = (noise.steps(horizon, [rows, self.act_size]),
               self.rssm.step_noise(noise, rows, horizon))

    def step(carry, draws):
      act_noise, stoch_noise = (map(StepNoise, draws) if noise is not None else (None, None))
      policy = actor.params(tf.stop_gradient(carry['feat']))
      action = actor.dist(policy).sample(act_noise)
      prev = {k: carry[k] for k in state}
      new = self.rssm.img_step(prev, action, noise=stoch_noise)
      return {**new, 'feat': self.rssm.get_feat(new), 'action': action, 'policy': policy}
    steps = nets.loop(step, start, elems, horizon, self.rssm.unroll)
    seq = {k: tf.concat([start[k][None], steps[k]], 0) for k in start}
    if 'discount' in self.heads:
      disc = self.heads['discount'](seq['feat']).mean()
      true_first = (1.0 - tf.cast(flat(is_terminal), tf.float32)) * self.config.discount
      disc = tf.concat([true_first[None], disc[1:]], 0)
    else:
      disc = self.config.discount * tf.ones(tf.shape(seq['feat'])[:-1])
    seq['discount'] = disc
    seq['weight'] = discount_weights(disc)
    return seq


class ActorCritic(tf.Module):
  """Actor and critic trained on imagined trajectories (DreamerV2 Sec. 2, Eqs. 4-6)."""

  def __init__(self, config, act_space: gym.Space, feat_size: int, step: tf.Variable, dtype: str,
               loss_scale: bool = False):
    super().__init__(name='actor_critic')
    self.config, self.step = config, step
    discrete = isinstance(act_space, gym.spaces.Discrete)
    actor_kw = _kwargs(config.actor)
    if actor_kw['dist'] == 'auto':
      actor_kw['dist'] = 'onehot' if discrete else 'trunc_normal'
    self.grad = config.actor_grad
    if self.grad == 'auto':
      self.grad = 'reinforce' if discrete else 'dynamics'
    size = action_size(act_space)
    self.actor = nets.MLP(feat_size, [size], **actor_kw, dtype=dtype)
    self.critic = nets.MLP(feat_size, [], **_kwargs(config.critic), dtype=dtype)
    self.target_critic = self.critic
    if config.slow_target:
      self.target_critic = nets.MLP(feat_size, [], **_kwargs(config.critic), dtype=dtype)
      # The paper's code copies at its first update, after the first use; copying now means
      # the first update already sees the critic's weights. Later copies are identical.
      for s, d in zip(self.critic.variables, self.target_critic.variables):
        d.assign(s)
    # Checkpoints reach Keras layers' variables through their optimizer; the slow critic has
    # none, so its variables are tracked here (else a resume would reset it).
    self.target_variables = list(self.target_critic.variables)
    self.updates = tf.Variable(0, trainable=False, dtype=tf.int64)
    self.rewnorm = StreamNorm(**_kwargs(config.reward_norm))
    self.actor_opt = Optimizer('actor', **_kwargs(config.actor_opt), loss_scale=loss_scale,
                               variables=self.actor.trainable_variables)
    self.critic_opt = Optimizer('critic', **_kwargs(config.critic_opt), loss_scale=loss_scale,
                                variables=self.critic.trainable_variables)

  def train(self, world_model: WorldModel, start: dict, is_terminal: tf.Tensor,
            noise: Noise | None = None, reward_fn=None) -> dict:
    """One update of actor, critic and slow critic on trajectories imagined from `start`.

    reward_fn: imagined sequence -> reward `[H+1, B*T]`; default the reward head's mode (the
    task reward; exploration behaviours pass their intrinsic reward, see expl.py).
    """
    # Both tapes record everything; each loss reaches its own network's weights only.
    with tf.GradientTape() as actor_tape, tf.GradientTape() as critic_tape:
      actor_loss, critic_loss, metrics = self.loss(world_model, start, is_terminal, noise,
                                                   reward_fn)
    metrics.update(self.actor_opt(actor_tape, actor_loss))
    metrics.update(self.critic_opt(critic_tape, critic_loss))
    self.update_slow_target()
    return metrics

  def loss(self, world_model: WorldModel, start: dict, is_terminal: tf.Tensor,
           noise: Noise | None = None, reward_fn=None) -> tuple[tf.Tensor, tf.Tensor, dict]:
    """(actor loss, critic loss, metrics) on trajectories imagined from `start`."""
    if reward_fn is None:
      reward_fn = lambda seq: world_model.heads['reward'](seq['feat']).mode()
    seq = world_model.imagine(self.actor, start, is_terminal, self.config.imag_horizon, noise)
    seq['reward'], metrics = self.rewnorm(reward_fn(seq))
    target, mets = self.target(seq)
    metrics.update(mets)
    actor_loss, mets = self.actor_loss(seq, target)
    metrics.update(mets)
    critic_loss, mets = self.critic_loss(seq, target)
    metrics.update(mets)
    return actor_loss, critic_loss, metrics

  def target(self, seq: dict) -> tuple[tf.Tensor, dict]:
    """lambda-returns of the imagined sequence, bootstrapped with the slow critic.

      States:     [z0]  [z1]  [z2]  [z3]
      Rewards:    [r0]  [r1]  [r2]   r3
      Values:     [v0]  [v1]  [v2]  [v3]
      Discount:   [d0]  [d1]  [d2]   d3
      Targets:     t0    t1    t2
    """
    reward = tf.cast(seq['reward'], tf.float32)
    disc = tf.cast(seq['discount'], tf.float32)
    value = self.target_critic(seq['feat']).mode()
    seq['value'] = value  # The actor's slow baseline is these values: computed once.
    # The last value only bootstraps: H+1 states give H targets.
    target = lambda_return(reward[:-1], value[:-1], disc[:-1], value[-1],
                           self.config.discount_lambda)
    return target, {'critic_slow': tf.reduce_mean(value), 'critic_target': tf.reduce_mean(target)}

  def actor_loss(self, seq: dict, target: tf.Tensor) -> tuple[tf.Tensor, dict]:
    """-rho ln pi(a|z) sg(V - v(z)) - (1 - rho) V - eta H[pi], weighted by discount weights.

      Actions:      0   [a1]  [a2]   a3
                       ^  |  ^  |  ^  |
                      /   v /   v /   v
      States:     [z0]->[z1]-> z2 -> z3
      Targets:     t0   [t1]  [t2]
      Baselines:  [v0]  [v1]   v2    v3
      Entropies:        [e1]  [e2]
      Weights:    [ 1]  [w1]   w2    w3
      Loss:              l1    l2

    The policy at z_t chose a_{t+1} and is credited with t_{t+1}; its parameters are
    seq['policy'][t+1], saved when imagination sampled a_{t+1}. Two states drop out at the
    end (the bootstrap state, and the state whose action leads nowhere); one target at the
    start (z0 comes from replay).
    """
    metrics = {}
    policy = self.actor.dist(seq['policy'][1:-1])  # The actor at states z0 .. z_{H-2}.
    if self.grad == 'dynamics':
      objective = target[1:]
    else:
      if self.config.slow_baseline and 'value' in seq:
        baseline = seq['value'][:-2]  # From `target`: the slow critic on the same states.
      else:
        baseline_net = self.target_critic if self.config.slow_baseline else self.critic
        baseline = baseline_net(seq['feat'][:-2]).mode()
      advantage = tf.stop_gradient(target[1:] - baseline)
      action = tf.stop_gradient(seq['action'][1:-1])
      objective = policy.log_prob(action) * advantage
      if self.grad == 'both':
        mix = schedule(self.config.actor_grad_mix, self.step)
        objective = mix * target[1:] + (1 - mix) * objective
        metrics['actor_grad_mix'] = mix
      elif self.grad != 'reinforce':
        raise ValueError(f'actor_grad {self.grad!r}; allowed: auto, reinforce, dynamics, both')
    ent = policy.entropy()
    ent_scale = schedule(self.config.actor_ent, self.step)
    objective += ent_scale * ent
    weight = tf.stop_gradient(seq['weight'])
    actor_loss = -tf.reduce_mean(weight[:-2] * objective)
    metrics['actor_ent'] = tf.reduce_mean(ent)
    metrics['actor_ent_scale'] = ent_scale
    return actor_loss, metrics

  def critic_loss(self, seq: dict, target: tf.Tensor) -> tuple[tf.Tensor, dict]:
    """Regresses v(z_t) on the lambda-return t_t for every state with a target.

      States:     [z0]  [z1]  [z2]   z3
      Rewards:    [r0]  [r1]  [r2]   r3
      Values:     [v0]  [v1]  [v2]   v3
      Weights:    [ 1]  [w1]  [w2]   w3
      Targets:    [t0]  [t1]  [t2]
      Loss:        l0    l1    l2
    """
    dist = self.critic(tf.stop_gradient(seq['feat'][:-1]))
    target = tf.stop_gradient(target)
    weight = tf.stop_gradient(seq['weight'])
    critic_loss = -tf.reduce_mean(dist.log_prob(target) * weight[:-1])
    return critic_loss, {'critic': tf.reduce_mean(dist.mode())}

  def update_slow_target(self) -> None:
    """Every `slow_target_update` updates: target <- mix * critic + (1 - mix) * target."""
    # Cross-replica: mirrored variables are assigned once, for every replica.
    distribute.cross_replica(self._update_slow_target)

  def _update_slow_target(self) -> None:
    if self.config.slow_target:
      def copy():
        mix = tf.where(self.updates == 0, 1.0, float(self.config.slow_target_fraction))
        for s, d in zip(self.critic.variables, self.target_critic.variables):
          d.assign(mix * s + (1 - mix) * d)
        return tf.no_op()
      tf.cond(self.updates % self.config.slow_target_update == 0, copy, tf.no_op)
    self.updates.assign_add(1)


class Agent(Acting, tf.Module):
  """DreamerV2: `train(batch)` updates world model and actor-critic; `policy(obs)` acts.

  Args:
    config: a `Config` from `load_config`.
    obs_space: gymnasium `Dict` with the data keys (`image` uint8 `[H, W, C]` and/or float
      vectors) plus `reward`, `is_first`, `is_last`, `is_terminal`.
    act_space: gymnasium `Dict` with key `action`: `Discrete(n)` (one-hot vectors in batches and
      policy outputs) or a 1-D `Box` in [-1, 1].
    strategy: a `tf.distribute.Strategy` (see `distribute.make_strategy`); None uses the current
      one (the default strategy outside any scope). Variables and optimizers are created in its
      scope, `train` runs data parallel on its replicas, acting uses one device.
  """

  def __init__(self, config, obs_space: gym.spaces.Dict, act_space: gym.spaces.Dict,
               strategy: tf.distribute.Strategy | None = None):
    super().__init__(name='agent')
    self.strategy = strategy or tf.distribute.get_strategy()
    # Agent steps, the loop's counter and the schedules' clock: a plain host variable (the
    # loop reads it as an int every step), set by the acting loop, only read in training.
    self.step = tf.Variable(0, trainable=False, dtype=tf.int64)
    with self.strategy.scope():
      self._build(config, obs_space, act_space)

  def _build(self, config, obs_space, act_space):
    for key in STEP_KEYS:
      if key not in obs_space.spaces:
        raise ValueError(f'obs_space lacks key {key!r}; it needs {", ".join(STEP_KEYS)} '
                         'beside the data keys')
    if 'action' not in act_space.spaces:
      raise ValueError(f'act_space has keys {sorted(act_space.spaces)}; it needs key "action"')
    # `log_*` keys are for logging only; the agent never sees them.
    obs_space = gym.spaces.Dict({k: v for k, v in obs_space.spaces.items()
                                 if not k.startswith('log_')})
    self.config, self.obs_space, self.act_space = config, obs_space, act_space['action']
    self.dtype = precision.resolve(config.precision)
    loss_scale = self.dtype == 'mixed_float16'
    self.wm = WorldModel(config, obs_space, self.act_space, self.dtype, loss_scale)
    make_ac = lambda: ActorCritic(config, self.act_space, self.wm.rssm.feat_size, self.step,
                                  self.dtype, loss_scale)
    self.ac = make_ac()
    # Plan2Explore / model-loss exploration: its own actor-critic, acting in explore mode.
    self.expl = expl.make(config, self.wm, make_ac, self.dtype, loss_scale)
    self._discrete = isinstance(self.act_space, gym.spaces.Discrete)
    # autograph=False: the traced code has no tensor-dependent Python control flow (tf.cond is
    # explicit), and converting the config and Keras internals only costs trace time.
    wrap = (lambda fn: tf.function(fn, jit_compile=bool(config.xla), autograph=False)
            if config.jit else fn)
    self._train_fn = wrap(self._train_replicas)
    self._report_fn = wrap(self._report)
    # One step function per mode, with its own XLA switch (policy_xla); see _compile_policy.
    self._policy_fns = {mode: self._compile_policy(mode) for mode in ('train', 'explore', 'eval')}

  @property
  def weights_(self) -> list:
    """Every network weight, optimizer slot and counter of the agent, in a fixed order."""
    acs = [self.ac] + ([self.expl.ac] if self.expl is not None else [])
    modules, opts, counters = list(self.wm.modules_), [self.wm.opt], []
    for ac in acs:
      modules += [ac.actor, ac.critic] + ([ac.target_critic] if ac.target_critic is not ac.critic
                                          else [])
      opts += [ac.actor_opt, ac.critic_opt]
      counters += [ac.updates, ac.rewnorm.mag]
    if self.expl is not None:
      modules += self.expl.modules_
      opts.append(self.expl.opt)
      counters += [n.mag for n in (getattr(self.expl, 'intr_norm', None),
                                   getattr(self.expl, 'extr_norm', None)) if n is not None]
    scales = [v for o in opts if o._loss_scale for v in (o.scale, o.good_steps)]
    return ([v for m in modules for v in m.variables] + [v for o in opts for v in o.opt.variables]
            + scales + counters + [self.step])

  def report(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Open-loop video predictions of the world model for the image keys of a batch."""
    data = self._check_batch(batch)
    if data['action'].shape[1] < 6:
      return {}
    return {f'openl_{k}': v.numpy() for k, v in self._report_fn(data).items()}

  def _report(self, data):
    data = self.wm.preprocess(data)
    keys = self.wm.heads['decoder'].cnn_keys
    return {key: self.wm.video_pred(data, key) for key in keys}

  def _train_replicas(self, data):
    metrics = self.strategy.run(self._train, args=(data,))
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in metrics.items()}

  def _train(self, data, noise=None):
    # Samples depend on (seed, update, global row) only: see noise.py.
    noise = noise or Noise(self.config.seed, self.ac.updates)
    data = self.wm.preprocess(data)
    outputs, metrics = self.wm.train(data, noise)
    metrics.update(self.ac.train(self.wm, outputs['post'], data['is_terminal'], noise))
    if self.expl is not None:
      mets = self.expl.train(self.wm, outputs, data, noise)
      metrics.update({f'expl_{k}': v for k, v in mets.items()})
    return metrics

  def train(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One gradient step of the world model, actor and critic on a batch `[B, T, ...]`.

    The batch holds the observation keys and `action` (one-hot for discrete actions; the action
    at index t led into step t). Under a strategy with several replicas it is the global batch,
    split here into equal shares, or already distributed values (from the strategy's
    `experimental_distribute_dataset`). Returns the metrics, averaged over replicas, as floats.
    """
    if not isinstance(next(iter(batch.values())), tf.distribute.DistributedValues):
      batch = self._check_batch(batch)
      if self.strategy.num_replicas_in_sync > 1:
        batch = distribute.split_batch(self.strategy, batch)
    metrics = self._train_fn(batch)
    return {k: float(v) for k, v in metrics.items()}

  def _check_batch(self, batch) -> dict:
    want = {**{k: tuple(v.shape) for k, v in self.obs_space.spaces.items()},
            'action': (self.wm.act_size,)}
    data = {}
    for key, shape in want.items():
      if key not in batch:
        raise ValueError(f'batch lacks key {key!r}; expected keys: {", ".join(want)}')
      value = batch[key]
      if tuple(value.shape[2:]) != shape or len(value.shape) != 2 + len(shape):
        raise ValueError(f'batch[{key!r}] has shape {tuple(value.shape)}; expected '
                         f'[B, T, {", ".join(map(str, shape))}]'.replace(', ]', ']'))
      data[key] = value
    return data
