"""Distributions used by the agent, thin wrappers around TensorFlow Probability.

TFP distributions are used inside our own code only (not as Keras layers). The wrappers add what
DreamerV2 needs on top: straight-through gradients for one-hot samples and modes, float32
likelihoods whatever the compute dtype, and a uniform `mode()` for every head. Every wrapper keeps
the TFP distribution as `.dist` so `tfd.kl_divergence` works on it.

`sample(noise)` takes an optional `noise.Noise`: the train step passes one so its samples are a
function of the global batch row (exact data parallelism, see `distribute.py`); acting passes
none and uses TensorFlow's stateful generators.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def _f32(x: tf.Tensor) -> tf.Tensor:
  return tf.cast(x, tf.float32)


def dims(x: tf.Tensor) -> list:
  """The shape of x as a list: static ints where known, scalar tensors elsewhere.

  Reshaping with this list (rather than `tf.shape(x)`) keeps the static dimensions in the
  graph, so convolution and matmul kernels are chosen for known shapes.
  """
  dynamic = tf.shape(x)
  return [s if s is not None else dynamic[i] for i, s in enumerate(x.shape.as_list())]


class OneHotDist:
  """Categorical over one-hot vectors with straight-through gradients.

  `sample()` and `mode()` return one-hot vectors whose gradient w.r.t. the logits is that of the
  class probabilities: `onehot + probs - sg(probs)` (Bengio et al. 2013; DreamerV2 Sec. 2).
  `event_dims` extra trailing dimensions are summed in `log_prob`/`entropy` (1 for the RSSM's 32
  independent categoricals, 0 for the actor).
  """

  def __init__(self, logits: tf.Tensor, event_dims: int = 0):
    self.logits = _f32(logits)
    base = tfd.OneHotCategorical(logits=self.logits, dtype=tf.float32)
    self.dist = tfd.Independent(base, event_dims) if event_dims else base

  def _straight_through(self, onehot: tf.Tensor) -> tf.Tensor:
    probs = tf.nn.softmax(self.logits, -1)
    return onehot + probs - tf.stop_gradient(probs)

  def sample(self, noise=None) -> tf.Tensor:
    if noise is None:
      onehot = self.dist.sample()
    else:
      # Gumbel-max: argmax(logits + Gumbel noise) is a sample of the categorical.
      gumbel = -tf.math.log(-tf.math.log(noise.uniform(dims(self.logits))))
      onehot = tf.one_hot(tf.argmax(self.logits + gumbel, -1), self.logits.shape[-1],
                          dtype=tf.float32)
    return self._straight_through(tf.stop_gradient(onehot))

  def mode(self) -> tf.Tensor:
    depth = self.logits.shape[-1]
    onehot = tf.one_hot(tf.argmax(self.logits, -1), depth, dtype=tf.float32)
    return self._straight_through(onehot)

  def log_prob(self, x: tf.Tensor) -> tf.Tensor:
    return self.dist.log_prob(_f32(x))

  def entropy(self) -> tf.Tensor:
    return self.dist.entropy()


class MSEDist:
  """Unit-variance Normal over the last `event_dims` dimensions (`mse` heads and the decoder)."""

  def __init__(self, mean: tf.Tensor, event_dims: int = 0):
    self.mean_ = _f32(mean)
    base = tfd.Normal(self.mean_, 1.0)
    self.dist = tfd.Independent(base, event_dims) if event_dims else base

  def mode(self) -> tf.Tensor:
    return self.mean_

  def mean(self) -> tf.Tensor:
    return self.mean_

  def log_prob(self, x: tf.Tensor) -> tf.Tensor:
    return self.dist.log_prob(_f32(x))


class NormalDist:
  """Diagonal Normal with learned std, over the last `event_dims` dimensions."""

  def __init__(self, mean: tf.Tensor, std: tf.Tensor, event_dims: int = 1):
    self._mean, self._std = _f32(mean), _f32(std)
    self.dist = tfd.Independent(tfd.Normal(self._mean, self._std), event_dims)

  def sample(self, noise=None) -> tf.Tensor:
    if noise is None:
      return self.dist.sample()  # Reparameterised.
    return self._mean + self._std * noise.normal(dims(self._mean))

  def mode(self) -> tf.Tensor:
    return self.dist.mean()

  def log_prob(self, x: tf.Tensor) -> tf.Tensor:
    return self.dist.log_prob(_f32(x))

  def entropy(self) -> tf.Tensor:
    return self.dist.entropy()


class BinaryDist:
  """Bernoulli with soft targets, as the discount head is trained on targets 0 or gamma.

  `log_prob(x) = x ln sigmoid(l) + (1 - x) ln sigmoid(-l)`, valid for x in [0, 1]; `mean()` is the
  predicted discount used to weight imagined steps.
  """

  def __init__(self, logits: tf.Tensor, event_dims: int = 0):
    self.logits = _f32(logits)
    self._event_dims = event_dims
    self.dist = tfd.Bernoulli(logits=self.logits, dtype=tf.float32)

  def mean(self) -> tf.Tensor:
    return tf.sigmoid(self.logits)

  def mode(self) -> tf.Tensor:
    mean = self.mean()
    return tf.round(mean) + mean - tf.stop_gradient(mean)

  def log_prob(self, x: tf.Tensor) -> tf.Tensor:
    x = _f32(x)
    like = -tf.nn.softplus(-self.logits) * x - tf.nn.softplus(self.logits) * (1 - x)
    if self._event_dims:
      like = tf.reduce_sum(like, list(range(-self._event_dims, 0)))
    return like


class TruncNormalDist:
  """Normal truncated to [-1, 1] for continuous actions (the paper's `trunc_normal` actor).

  Samples are reparameterised and kept a hair inside the bounds with a straight-through clip so
  `log_prob` of an action taken stays finite. Means must lie in [-1, 1] (the actor's tanh), so
  the standardised bounds satisfy `a <= 0 <= b`.

  The gradient of a sample x = mean + std * z (z the standardised draw) in mean and std:

  - `exact_grad=False` (the default, as the paper's code): TensorFlow's registered gradient of
    its truncated-normal sampler, which TFP's `TruncatedNormal.sample` and so the paper's actor
    use: dx/dmean = 1, dx/dstd = z, as if the bounds moved with mean and std. The published
    curves were trained with it.
  - `exact_grad=True`: the derivative with the bounds held at [-1, 1] (implicit
    reparameterisation through the inverse CDF). Near a bound and at large std the two differ
    several-fold; docs/parity.md has the measurements.
  """

  # Smallest tail mass inverted with ndtri. Float32 uniforms in [0, 1) are multiples of 2^-24,
  # so every draw but exactly 0 leaves both tail masses at least 2^-24 * 0.33 (0.33: the
  # smallest mass of [-1, 1] at the actor's largest std, 2.1). A draw of 0 takes its limit,
  # the lower bound. ndtri'(TAIL_MIN) = 5e10 keeps pathwise gradients far from overflow.
  TAIL_MIN = 1e-12

  def __init__(self, mean: tf.Tensor, std: tf.Tensor, clip: float = 1e-6,
               exact_grad: bool = False):
    self._clip, self._exact_grad = clip, exact_grad
    self._mean, self._std = _f32(mean), _f32(std)
    self.dist = tfd.Independent(
        tfd.TruncatedNormal(self._mean, self._std, -1.0, 1.0), 1)

  def _clipped(self, x: tf.Tensor) -> tf.Tensor:
    clipped = tf.clip_by_value(x, -1 + self._clip, 1 - self._clip)
    return x - tf.stop_gradient(x) + tf.stop_gradient(clipped)

  def sample(self, noise=None) -> tf.Tensor:
    """A sample; `noise` (noise.Noise or StepNoise) draws its uniform, else TensorFlow's RNG."""
    shape = dims(self._mean)
    u = noise.uniform(shape) if noise is not None else tf.random.uniform(shape)
    z = self._inverse_cdf(u)
    if not self._exact_grad:
      z = tf.stop_gradient(z)  # TensorFlow's sampler gradient: d/dmean = 1, d/dstd = z.
    return self._clipped(self._mean + self._std * z)

  def _inverse_cdf(self, u: tf.Tensor) -> tf.Tensor:
    """The standardised sample z at uniform draws `u` in [0, 1), differentiable in mean and std.

    z = Phi^-1(Phi(a) + u (Phi(b) - Phi(a))) for the standardised bounds a, b. In float32 that
    CDF value rounds to 0 or 1 in the tails (Phi(-14) underflows, Phi(5.5) rounds to 1), where
    ndtri gives +-inf and the sample and its gradients NaN. So each draw is inverted from the
    tail it lies in: the lower tail from p = Phi(z), the upper one from q = 1 - p = Phi(-z),
    each computed from its own small masses, never as 1 - p.
    """
    phi = lambda x: 0.5 * tf.math.erfc(-x / 2 ** 0.5)  # The standard normal CDF.
    a, b = (-1 - self._mean) / self._std, (1 - self._mean) / self._std
    p = phi(a) + u * (phi(b) - phi(a))
    q = phi(-b) + (1 - u) * (phi(-a) - phi(-b))
    # Every branch stays finite (ndtri's input clamped to [TAIL_MIN, 0.5]): tf.where passes a
    # zero gradient to the unselected branch, which is NaN if that branch is infinite.
    lower = tf.where(p < self.TAIL_MIN, a, tf.math.ndtri(tf.clip_by_value(p, self.TAIL_MIN, 0.5)))
    upper = tf.where(q < self.TAIL_MIN, b, -tf.math.ndtri(tf.clip_by_value(q, self.TAIL_MIN, 0.5)))
    return tf.where(p <= q, lower, upper)

  def mode(self) -> tf.Tensor:
    # The density's peak, the mean clipped to the bounds (TFP's `mode`, which the paper's eval
    # policy acts with), not the truncated distribution's mean, which lies nearer 0.
    return tf.clip_by_value(self._mean, -1.0, 1.0)

  def log_prob(self, x: tf.Tensor) -> tf.Tensor:
    return self.dist.log_prob(self._clipped(_f32(x)))

  def entropy(self) -> tf.Tensor:
    return self.dist.entropy()


class TanhNormalDist:
  """Normal squashed by tanh; the mode is estimated as the tanh of the Normal's mean."""

  def __init__(self, mean: tf.Tensor, std: tf.Tensor):
    self._mean, self._std = _f32(mean), _f32(std)
    base = tfd.Normal(self._mean, self._std)
    self._normal = tfd.Independent(base, 1)
    self.dist = tfd.Independent(
        tfd.TransformedDistribution(base, tfp.bijectors.Tanh()), 1)

  def sample(self, noise=None) -> tf.Tensor:
    if noise is None:
      return self.dist.sample()
    return tf.tanh(self._mean + self._std * noise.normal(dims(self._mean)))

  def mode(self) -> tf.Tensor:
    return tf.tanh(self._normal.mean())

  def log_prob(self, x: tf.Tensor) -> tf.Tensor:
    return self.dist.log_prob(tf.clip_by_value(_f32(x), -0.99999997, 0.99999997))

  def entropy(self) -> tf.Tensor:
    # No closed form; a one-sample estimate, as the paper's code does.
    sample = self.dist.sample()
    return -self.dist.log_prob(sample)
