"""Networks of DreamerV2: RSSM, image/vector encoder and decoder, MLP heads, and the GRU cell.

Every layer is created and built in `__init__` with known input
shapes, so variables exist before the first call: checkpoints restore deterministically and
SavedModel tracing never creates variables. Layers take a Keras dtype policy (`float32`,
`mixed_float16`, `mixed_bfloat16`); distribution parameters leave the nets in float32.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from dreamerv2_tf import distribute, dists, layers
from dreamerv2_tf.dists import dims  # noqa: F401 (re-exported: nets.dims)
from dreamerv2_tf.noise import StepNoise

ACTS = {
    'elu': tf.nn.elu, 'relu': tf.nn.relu, 'tanh': tf.tanh, 'swish': tf.nn.silu,
    'silu': tf.nn.silu, 'gelu': tf.nn.gelu, 'leaky_relu': tf.nn.leaky_relu,
    'none': tf.identity,
}


def get_act(name: str):
  if name not in ACTS:
    raise ValueError(f'unknown activation {name!r}; allowed: {", ".join(ACTS)}')
  return ACTS[name]


def built(layer: keras.layers.Layer, shape: Sequence) -> keras.layers.Layer:
  """Builds a Keras layer for an input shape now, so its variables exist up front."""
  layer.build(tuple(shape))
  return layer



def norm_layer(norm: str, size: int, dtype) -> keras.layers.Layer | None:
  if norm == 'none':
    return None
  if norm == 'layer':
    return built(keras.layers.LayerNormalization(dtype=dtype), (None, size))
  raise ValueError(f'unknown norm {norm!r}; allowed: none, layer')


class DenseStack(keras.layers.Layer):
  """Dense -> norm -> activation, repeated; the hidden part of every MLP."""

  def __init__(self, in_size: int, units: Sequence[int], act='elu', norm='none', **kwargs):
    super().__init__(**kwargs)
    self._act = get_act(act)
    self.denses, self.norms = [], []
    for width in units:
      self.denses.append(built(layers.Dense(width, dtype=self.dtype_policy), (None, in_size)))
      self.norms.append(norm_layer(norm, width, self.dtype_policy))
      in_size = width
    self.out_size = in_size
    self.built = True

  def call(self, x):
    x = tf.cast(x, self.compute_dtype)
    # On 2-D inputs Keras' Dense is one MatMul that Grappler fuses with its bias and activation
    # into a single oneDNN kernel; on [T, B, F] it becomes a Tensordot whose reshapes block that
    # fusion, leaving two more passes over every hidden activation.
    lead = dims(x)[:-1]
    x = tf.reshape(x, [-1, x.shape[-1]])
    for dense, norm in zip(self.denses, self.norms):
      x = dense(x)
      x = norm(x) if norm is not None else x
      x = self._act(x)
    return tf.reshape(x, lead + [x.shape[-1]])


class DistLayer(keras.layers.Layer):
  """Maps features to a distribution over a tensor of `shape`.

  dist: `mse` (unit Normal), `binary` (Bernoulli), `onehot` (straight-through categorical),
  `normal`, `trunc_normal`, `trunc_normal_exact`, `tanh_normal` (learned std; actions in
  [-1, 1]; `trunc_normal` backpropagates through samples as the paper's code does,
  `trunc_normal_exact` with the exact derivative: dists.TruncNormalDist).
  """

  def __init__(self, in_size: int, shape: Sequence[int], dist='mse', min_std=0.1, init_std=0.0,
               **kwargs):
    super().__init__(**kwargs)
    self._shape, self._dist = tuple(shape), dist
    self._min_std, self._init_std = min_std, init_std
    size = 1
    for dim in self._shape:
      size *= dim
    self._size = size
    self.out = built(layers.Dense(size, dtype=self.dtype_policy), (None, in_size))
    self.std = None
    if dist in ('normal', 'trunc_normal', 'trunc_normal_exact', 'tanh_normal'):
      self.std = built(layers.Dense(size, dtype=self.dtype_policy), (None, in_size))
    elif dist not in ('mse', 'binary', 'onehot'):
      raise ValueError(f'unknown dist {dist!r}; allowed: mse, binary, onehot, normal, '
                       'trunc_normal, trunc_normal_exact, tanh_normal')
    self.built = True

  @property
  def params_size(self) -> int:
    """Width of `params`: the mean (or logits) part, then the std part if there is one."""
    return self._size * (2 if self.std is not None else 1)

  def params(self, x: tf.Tensor) -> tf.Tensor:
    """The distribution's raw parameters, float32 `[..., params_size]`; `dist` maps them."""
    x = tf.cast(x, self.compute_dtype)
    out = tf.cast(self.out(x), tf.float32)
    if self.std is None:
      return out
    return tf.concat([out, tf.cast(self.std(x), tf.float32)], -1)

  def dist(self, params: tf.Tensor):
    """The distribution for `params` (as returned by `params`)."""
    out = params[..., :self._size]
    out = tf.reshape(out, dims(out)[:-1] + list(self._shape))
    n = len(self._shape)
    if self._dist == 'mse':
      return dists.MSEDist(out, n)
    if self._dist == 'binary':
      return dists.BinaryDist(out, n)
    if self._dist == 'onehot':
      return dists.OneHotDist(out)
    std = tf.reshape(params[..., self._size:], dims(out))
    if self._dist == 'normal':
      return dists.NormalDist(out, tf.nn.softplus(std) + self._min_std)
    if self._dist == 'tanh_normal':
      mean = 5 * tf.tanh(out / 5)  # Keeps the pre-squash mean in a range tanh can still move.
      std = tf.nn.softplus(std + self._init_std) + self._min_std
      return dists.TanhNormalDist(mean, std)
    # trunc_normal(_exact): the paper's continuous actor.
    std = 2 * tf.sigmoid((std + self._init_std) / 2) + self._min_std
    return dists.TruncNormalDist(tf.tanh(out), std,
                                 exact_grad=self._dist == 'trunc_normal_exact')

  def call(self, x):
    return self.dist(self.params(x))


class MLP(keras.layers.Layer):
  """MLP head on the model state features: `layers` x `units`, then a `DistLayer`."""

  def __init__(self, in_size: int, shape: Sequence[int], layers=4, units=400, act='elu',
               norm='none', dist='mse', min_std=0.1, **kwargs):
    super().__init__(**kwargs)
    self.hidden = DenseStack(in_size, [units] * layers, act, norm, dtype=self.dtype_policy)
    self.head = DistLayer(self.hidden.out_size, shape, dist, min_std, dtype=self.dtype_policy)
    self.built = True

  def params(self, feat: tf.Tensor) -> tf.Tensor:
    """The head's raw distribution parameters (see `DistLayer.params`)."""
    return self.head.params(self.hidden(feat))

  def dist(self, params: tf.Tensor):
    return self.head.dist(params)

  def call(self, feat):
    return self.dist(self.params(feat))


class GRUCell(keras.layers.Layer):
  """GRU as in the paper's code: one Dense for all gates, optional layer norm, update bias -1.

  The negative update bias makes the cell keep its state early in training.
  """

  def __init__(self, in_size: int, size: int, norm=True, act='tanh', update_bias=-1.0, **kwargs):
    # No autocast: the recurrent state stays float32 (see call).
    super().__init__(autocast=False, **kwargs)
    self.size, self._act, self._update_bias = size, get_act(act), update_bias
    self.layer = built(layers.Dense(3 * size, dtype=self.dtype_policy),
                       (None, in_size + size))
    self.norm = norm_layer('layer' if norm else 'none', 3 * size, self.dtype_policy)
    self.built = True

  def call(self, x, state):
    """x: input in compute dtype; state: float32 `[B, size]`. Returns the new float32 state."""
    parts = self.layer(tf.concat([x, tf.cast(state, x.dtype)], -1))
    if self.norm is not None:
      parts = self.norm(parts)
    reset, cand, update = tf.split(tf.cast(parts, tf.float32), 3, -1)
    reset = tf.sigmoid(reset)
    cand = self._act(reset * cand)
    update = tf.sigmoid(update + self._update_bias)
    # The blend runs in float32 so the recurrent state does not lose precision over long
    # sequences under mixed precision.
    return update * cand + (1 - update) * state


class RSSM(keras.layers.Layer):
  """Recurrent state-space model (DreamerV2 Sec. 2, Fig. 2).

  State dict: `deter` h_t `[B, deter]`, `stoch` z_t (`[B, stoch, discrete]` one-hot samples, or
  `[B, stoch]` Gaussian when `discrete=0`), and the statistics of z_t's distribution (`logits`,
  or `mean`/`std`), all float32.

    img_step: h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}]),  prior  p(z_t | h_t)
    obs_step: prior step, then posterior q(z_t | h_t, embed(x_t))
  """

  def __init__(self, action_size: int, embed_size: int, hidden=1024, deter=1024, stoch=32,
               discrete=32, act='elu', norm='none', gru_norm=True, std_act='sigmoid2',
               min_std=0.1, unroll=True, **kwargs):
    super().__init__(**kwargs)
    self.unroll = unroll  # Sequence loops: Python-unrolled, or tf.scan (for XLA); see `loop`.
    self._deter, self._stoch, self._discrete = deter, stoch, discrete
    self._act, self._std_act, self._min_std = get_act(act), std_act, min_std
    stoch_size = stoch * discrete if discrete else stoch
    stats_size = stoch * discrete if discrete else 2 * stoch
    policy = self.dtype_policy
    dense = lambda units, size: built(layers.Dense(units, dtype=policy), (None, size))
    self.img_in = dense(hidden, stoch_size + action_size)
    self.img_in_norm = norm_layer(norm, hidden, policy)
    self.cell = GRUCell(hidden, deter, norm=gru_norm, dtype=policy)
    self.img_out = dense(hidden, deter)
    self.img_out_norm = norm_layer(norm, hidden, policy)
    self.img_dist = dense(stats_size, hidden)
    self.obs_out = dense(hidden, deter + embed_size)
    self.obs_out_norm = norm_layer(norm, hidden, policy)
    self.obs_dist = dense(stats_size, hidden)
    self.feat_size = deter + stoch_size
    self.built = True

  def initial(self, batch_size) -> dict:
    """The all-zero state the paper's code starts and resets to."""
    zeros = lambda *shape: tf.zeros([batch_size, *shape], tf.float32)
    if self._discrete:
      return {'deter': zeros(self._deter), 'stoch': zeros(self._stoch, self._discrete),
              'logits': zeros(self._stoch, self._discrete)}
    return {'deter': zeros(self._deter), 'stoch': zeros(self._stoch),
            'mean': zeros(self._stoch), 'std': zeros(self._stoch)}

  def get_feat(self, state: dict) -> tf.Tensor:
    """feat = concat(flatten(z), h), float32 `[..., feat_size]`."""
    stoch = state['stoch']
    if self._discrete:
      stoch = tf.reshape(stoch, dims(stoch)[:-2] + [self._stoch * self._discrete])
    return tf.concat([stoch, state['deter']], -1)

  def get_dist(self, state: dict):
    if self._discrete:
      return dists.OneHotDist(state['logits'], event_dims=1)
    return dists.NormalDist(state['mean'], state['std'], event_dims=1)

  def _stats(self, layer, x) -> dict:
    x = tf.cast(layer(x), tf.float32)
    if self._discrete:
      return {'logits': tf.reshape(x, dims(x)[:-1] + [self._stoch, self._discrete])}
    mean, std = tf.split(x, 2, -1)
    std = {
        'softplus': lambda: tf.nn.softplus(std),
        'sigmoid': lambda: tf.sigmoid(std),
        'sigmoid2': lambda: 2 * tf.sigmoid(std / 2),
    }[self._std_act]()
    return {'mean': mean, 'std': std + self._min_std}

  def _layer(self, dense, norm, x):
    x = dense(x)
    x = norm(x) if norm is not None else x
    return self._act(x)

  def img_step(self, prev_state: dict, prev_action: tf.Tensor, sample: bool = True,
               noise=None) -> dict:
    """One prior step. prev_action: `[B, A]` (one-hot for discrete actions).

    `noise` (a `noise.Noise`) makes the sample a function of the global batch row.
    """
    deter = self._deter_step(prev_state, prev_action)
    x = self._layer(self.img_out, self.img_out_norm, tf.cast(deter, self.compute_dtype))
    stats = self._stats(self.img_dist, x)
    dist = self.get_dist(stats)
    stoch = dist.sample(noise) if sample else dist.mode()
    return {'stoch': stoch, 'deter': deter, **stats}

  def _deter_step(self, prev_state: dict, prev_action: tf.Tensor) -> tf.Tensor:
    """h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}]), float32."""
    prev_stoch = prev_state['stoch']
    if self._discrete:
      prev_stoch = tf.reshape(prev_stoch, [-1, self._stoch * self._discrete])
    x = tf.concat([tf.cast(prev_stoch, self.compute_dtype),
                   tf.cast(prev_action, self.compute_dtype)], -1)
    x = self._layer(self.img_in, self.img_in_norm, x)
    return self.cell(x, prev_state['deter'])

  def obs_step(self, prev_state: dict, prev_action: tf.Tensor, embed: tf.Tensor,
               is_first: tf.Tensor, sample: bool = True, noise=None,
               with_prior: bool = True) -> tuple[dict, dict | None]:
    """One posterior step; `is_first` resets the state and action to zeros first.

    with_prior=False skips the prior's statistics (only training's KL needs them): acting then
    reads a sixth fewer weights per step. Returns (posterior, prior or None).
    """
    keep = 1.0 - tf.cast(is_first, tf.float32)
    mask = lambda x: x * tf.reshape(tf.cast(keep, x.dtype), [-1] + [1] * (len(x.shape) - 1))
    prev_state = {k: mask(v) for k, v in prev_state.items()}
    if with_prior:
      # The prior's own sample is never used here: take the mode and save a draw.
      prior = self.img_step(prev_state, mask(prev_action), sample=False)
      deter = prior['deter']
    else:
      prior, deter = None, self._deter_step(prev_state, mask(prev_action))
    x = tf.concat([tf.cast(deter, self.compute_dtype), tf.cast(embed, self.compute_dtype)], -1)
    x = self._layer(self.obs_out, self.obs_out_norm, x)
    stats = self._stats(self.obs_dist, x)
    dist = self.get_dist(stats)
    stoch = dist.sample(noise) if sample else dist.mode()
    return {'stoch': stoch, 'deter': deter, **stats}, prior

  def observe(self, embed: tf.Tensor, action: tf.Tensor, is_first: tf.Tensor,
              state: dict | None = None, sample: bool = True,
              noise=None) -> tuple[dict, dict]:
    """Posteriors and priors over a batch-major sequence `[B, T, ...]` (T must be static).

    action[:, t] is the action that led *into* step t (a_{t-1} in the paper's notation), as the
    replay stores it; it is zero at `is_first` steps. With `unroll` the loop is Python-unrolled
    (fastest in TensorFlow's graph runtime), else a `tf.scan` that XLA compiles quickly.
    """
    embed, action, is_first = map(tf.convert_to_tensor, (embed, action, is_first))
    batch, length = tf.shape(action)[0], action.shape[1]
    if state is None:
      state = self.initial(batch)
    draws = self.step_noise(noise, dims(action)[0], length)
    elems = (time_major(action), time_major(embed), time_major(is_first),
             tf.range(length) if draws is None else draws)  # A stand-in without noise.

    def body(carry, inputs):
      act, emb, first, u = inputs
      step_noise = None if draws is None else StepNoise(u)
      return self.obs_step(carry[0], act, emb, first, sample, step_noise)
    posts, priors = loop(body, (state, state), elems, length, self.unroll)
    return batch_major(posts), batch_major(priors)

  def step_noise(self, noise, rows, steps: int) -> tf.Tensor | None:
    """This model's latent-sample noise for `steps` steps, `[steps, rows, ...]`, or None."""
    if noise is None:
      return None
    shape = [self._stoch, self._discrete] if self._discrete else [self._stoch]
    return noise.steps(steps, [rows, *shape])

  def imagine(self, action: tf.Tensor, state: dict, sample: bool = True) -> dict:
    """Open-loop priors for batch-major actions `[B, T, A]` from `state` (`[B, ...]`)."""
    action = tf.convert_to_tensor(action)
    body = lambda carry, act: self.img_step(carry, act, sample)
    priors = loop(body, state, time_major(action), action.shape[1], self.unroll)
    return batch_major(priors)

  def kl_loss(self, post: dict, prior: dict, forward=False, balance=0.8, free=0.0,
              free_avg=True) -> tuple[tf.Tensor, tf.Tensor]:
    """KL balancing (DreamerV2 Sec. 2, Algorithm 2).

    With forward=False and balance=alpha:
      loss = alpha * KL(sg(post) || prior) + (1 - alpha) * KL(post || sg(prior))
    so alpha of the gradient trains the prior toward the posterior and 1 - alpha regularises the
    posterior. `free` nats clip the loss from below, per step or (free_avg) on the batch mean.
    Returns (scalar loss, per-step KL value `[B, T]`).
    """
    kld = lambda lhs, rhs: tfd_kl(self.get_dist(lhs), self.get_dist(rhs))
    sg = lambda state: {k: tf.stop_gradient(v) for k, v in state.items()}
    lhs, rhs = (prior, post) if forward else (post, prior)
    mix = balance if forward else 1 - balance
    if balance == 0.5:
      value = kld(lhs, rhs)
      loss = tf.reduce_mean(tf.maximum(value, free))
      return loss, value
    value_lhs = value = kld(lhs, sg(rhs))
    value_rhs = kld(sg(lhs), rhs)
    if free_avg:
      loss_lhs = _free_mean(value_lhs, free)
      loss_rhs = _free_mean(value_rhs, free)
    else:
      loss_lhs = tf.reduce_mean(tf.maximum(value_lhs, free))
      loss_rhs = tf.reduce_mean(tf.maximum(value_rhs, free))
    return mix * loss_lhs + (1 - mix) * loss_rhs, value


def time_major(x: tf.Tensor) -> tf.Tensor:
  return tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))


def batch_major(tree):
  return tf.nest.map_structure(time_major, tree)


def loop(body, init, elems, length: int, unroll: bool):
  """Stacked carries of `carry = body(carry, elems[t])` over t, time-major `[length, ...]`.

  unroll: a Python loop, one copy of the body per step (TensorFlow's graph runtime runs it
  fastest; XLA takes minutes to compile 50 copies of the RSSM), else `tf.scan` (one traced
  body in a while loop, which XLA compiles in seconds). Both compute the same values.
  """
  if not unroll:
    return tf.scan(body, elems, initializer=init)
  outs, carry = [], init
  for t in range(length):
    carry = body(carry, tf.nest.map_structure(lambda x: x[t], elems))
    outs.append(carry)
  return tf.nest.map_structure(lambda *xs: tf.stack(xs, 0), *outs)


def _free_mean(value: tf.Tensor, free: float) -> tf.Tensor:
  """max(mean(value), free), with the mean over the global batch under data parallelism.

  Each replica returns its local mean where the global mean clears `free` (so the replicas'
  averaged gradients are the global mean's) and the constant `free` elsewhere.
  """
  local = tf.reduce_mean(value)
  total = distribute.all_mean(tf.stop_gradient(local))
  return tf.where(total >= free, local, tf.cast(free, local.dtype))


def tfd_kl(lhs, rhs) -> tf.Tensor:
  """KL(lhs || rhs) of two wrapped distributions, float32."""
  return dists.tfd.kl_divergence(lhs.dist, rhs.dist)
