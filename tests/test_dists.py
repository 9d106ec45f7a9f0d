"""Samplers at their edges: every uniform draw in [0, 1), saturated means, the smallest std.

The train step draws its noise as uniforms (noise.py) and maps them through inverse CDFs and
Gumbel-max. A `dmc_*` update draws about 12,000 uniforms per action dimension, and
`stateless_uniform` returns exactly 0.0 once in 2^23 draws: an edge draw that gives NaN is met
in every long run, so each sampler is checked at the edges directly.
"""
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from dreamerv2_tf import dists, nets
from dreamerv2_tf.noise import Noise, StepNoise

# The uniform draws that matter: exactly 0, the smallest step above it, the middle, and the
# largest float32 below 1 (stateless_uniform's largest is 1 - 2^-23; 1 - 2^-24 is stricter).
EDGE_U = [0.0, 2.0 ** -23, 0.5, 1 - 2.0 ** -23, 1 - 2.0 ** -24]
# Means the actor's tanh can give (exactly +-1 for |logit| > 9) and its std range
# 2 sigmoid(.) + min_std = [0.1, 2.1].
MEANS = [-1.0, -0.9999, -0.9, -0.5, 0.0, 0.5, 0.9, 0.9999, 1.0]
STDS = [0.1, 0.3, 1.0, 2.1]


def _grid():
  mean, std, u = np.meshgrid(MEANS, STDS, EDGE_U, indexing='ij')
  return [tf.constant(x.reshape(-1, 1), tf.float32) for x in (mean, std, u)]


def _sample_and_grads(mean, std, u, exact_grad=True):
  mean, std = tf.Variable(mean), tf.Variable(std)
  with tf.GradientTape() as tape:
    x = dists.TruncNormalDist(mean, std, exact_grad=exact_grad).sample(StepNoise(u))
    # A loss that weighs every sample, as the dynamics-backprop actor loss does.
    loss = tf.reduce_sum(x * tf.range(1.0, 1.0 + x.shape[0])[:, None])
  return x.numpy(), [g.numpy() for g in tape.gradient(loss, [mean, std])]


@pytest.mark.parametrize('exact_grad', [True, False])
def test_trunc_normal_sample_is_finite_and_inside_at_every_edge_draw(exact_grad):
  mean, std, u = _grid()
  x, (dmean, dstd) = _sample_and_grads(mean, std, u, exact_grad)
  bad = ~np.isfinite(x) | ~np.isfinite(dmean) | ~np.isfinite(dstd)
  assert not bad.any(), np.concatenate([mean, std, u], 1)[bad[:, 0]]
  assert np.all(np.abs(x) <= 1 - 1e-6 + 1e-7)


def test_trunc_normal_sample_is_monotone_in_the_draw():
  # The inverse CDF is non-decreasing in u for every mean and std, tail switch included; u = 0
  # gives the lower bound.
  u = np.concatenate([[0.0], np.linspace(0, 1, 2001)[1:-1], [1 - 2.0 ** -24]]).astype(np.float32)
  for mean in MEANS:
    for std in STDS:
      x = dists.TruncNormalDist(tf.fill([len(u)], mean), tf.fill([len(u)], std)).sample(
          StepNoise(tf.constant(u))).numpy()
      assert np.all(np.diff(x) >= -1e-6), (mean, std)
      assert x[0] == pytest.approx(-1, abs=1e-5), (mean, std)


def test_trunc_normal_exact_pathwise_gradient_matches_finite_differences():
  # d sample / d(mean, std) at fixed u and fixed bounds: implicit reparameterisation.
  mean, std = np.float64(0.7), np.float64(0.2)
  u = np.array([1e-6, 0.1, 0.5, 0.9, 1 - 1e-6])
  def inv(m, s):
    dist = scipy.stats.truncnorm((-1 - m) / s, (1 - m) / s, loc=m, scale=s)
    return dist.ppf(u)
  eps = 1e-6
  want_m = (inv(mean + eps, std) - inv(mean - eps, std)) / (2 * eps)
  want_s = (inv(mean, std + eps) - inv(mean, std - eps)) / (2 * eps)
  m, s = tf.Variable(tf.fill([5], np.float32(mean))), tf.Variable(tf.fill([5], np.float32(std)))
  with tf.GradientTape(persistent=True) as tape:
    x = dists.TruncNormalDist(m, s, exact_grad=True).sample(StepNoise(tf.constant(u, tf.float32)))
    xs = tf.unstack(x)
  got_m = np.array([tape.gradient(xi, m).numpy()[i] for i, xi in enumerate(xs)])
  got_s = np.array([tape.gradient(xi, s).numpy()[i] for i, xi in enumerate(xs)])
  np.testing.assert_allclose(x.numpy(), inv(mean, std), atol=2e-5)
  np.testing.assert_allclose(got_m, want_m, atol=2e-3, rtol=2e-3)
  np.testing.assert_allclose(got_s, want_s, atol=2e-3, rtol=2e-3)


def test_trunc_normal_default_gradient_is_tensorflows_sampler_gradient_as_the_paper_takes():
  # The paper's actor samples with TFP's TruncatedNormal, i.e. TensorFlow's
  # StatelessParameterizedTruncatedNormal op, and backpropagates through the sample with that
  # op's registered gradient. Ours, fed the uniform draw that gives the op's sample, must
  # return the same sample and the same gradients in mean and std (nets.DistLayer's
  # `trunc_normal`, the `auto` choice for continuous actions); `trunc_normal_exact` must not.
  mean, std = np.meshgrid([-0.9, 0.0, 0.5, 0.99], [0.1, 0.5, 1.1, 2.0], indexing='ij')
  mean = tf.Variable(np.repeat(mean.reshape(-1), 50).astype(np.float32))
  std = tf.Variable(np.repeat(std.reshape(-1), 50).astype(np.float32))
  weights = tf.constant(np.linspace(-1, 2, mean.shape[0]), tf.float32)  # Any loss of x.
  with tf.GradientTape(persistent=True) as tape:
    ref = tf.random.stateless_parameterized_truncated_normal(
        mean.shape, [1, 2], mean, std, -1.0, 1.0)
    loss_ref = tf.reduce_sum(weights * tf.sin(3 * ref))
  want = tape.gradient(loss_ref, [mean, std])
  phi = lambda v: scipy.stats.norm.cdf(np.float64(v))
  m, s = mean.numpy(), std.numpy()
  a, b = phi((-1 - m) / s), phi((1 - m) / s)
  u = tf.constant((phi((ref.numpy() - m) / s) - a) / (b - a), tf.float32)
  layer = lambda name: nets.DistLayer(1, [1], dist=name)
  for name, exact in (('trunc_normal', False), ('trunc_normal_exact', True)):
    dist = layer(name).dist(tf.zeros([1, 2]))  # Only the class and its flag are used.
    assert dist._exact_grad is exact
    with tf.GradientTape() as tape:
      x = dists.TruncNormalDist(mean, std, exact_grad=exact).sample(StepNoise(u))
      loss = tf.reduce_sum(weights * tf.sin(3 * x))
    got = tape.gradient(loss, [mean, std])
    np.testing.assert_allclose(x.numpy(), ref.numpy(), atol=2e-4)
    close = [np.allclose(g.numpy(), w.numpy(), atol=2e-3, rtol=1e-3) for g, w in zip(got, want)]
    assert close == ([False, False] if exact else [True, True]), (name, close)


@pytest.mark.parametrize('mean,std', [
    (0.0, 1.0), (0.3, 0.1), (0.95, 0.1), (1.0, 0.1), (-1.0, 0.1), (-0.999, 2.1), (1.0, 2.1)])
def test_trunc_normal_samples_follow_the_truncated_normal(mean, std):
  # Kolmogorov-Smirnov against TFP's CDF, on the draws the train step makes (noise.Noise).
  n = 20000
  dist = dists.TruncNormalDist(tf.fill([n, 1], mean), tf.fill([n, 1], std))
  x = dist.sample(Noise(seed=3, update=tf.constant(0))).numpy()[:, 0]
  cdf = tfp.distributions.TruncatedNormal(
      np.float64(mean), np.float64(std), np.float64(-1), np.float64(1)).cdf
  # Samples are clipped 1e-6 inside the bounds (log_prob stays finite); that moves CDF values
  # by at most the truncated density times 1e-6, far below the KS resolution at this n.
  result = scipy.stats.kstest(x, lambda v: cdf(v).numpy())
  assert result.pvalue > 1e-3, result


def test_trunc_normal_log_prob_entropy_and_mode_are_finite_when_saturated():
  mean, std, _ = _grid()
  mean, std = tf.Variable(mean), tf.Variable(std)
  with tf.GradientTape() as tape:
    dist = dists.TruncNormalDist(mean, std)
    x = dist.sample(StepNoise(tf.zeros_like(mean)))
    terms = [dist.log_prob(tf.stop_gradient(x)), dist.entropy(), dist.mode()]
    loss = sum(tf.reduce_sum(t) for t in terms)
  for t in terms:
    assert np.isfinite(t.numpy()).all()
  assert all(np.isfinite(g.numpy()).all() for g in tape.gradient(loss, [mean, std]))


def test_gumbel_max_at_edge_draws_gives_one_hot_samples_with_finite_gradients():
  logits = tf.Variable([[0.0, 50.0, -50.0]] * len(EDGE_U))
  u = tf.constant(np.repeat(np.array(EDGE_U, np.float32)[:, None], 3, 1))
  with tf.GradientTape() as tape:
    x = dists.OneHotDist(logits).sample(StepNoise(u))
    loss = tf.reduce_sum(x * [1.0, 2.0, 3.0])
  x = x.numpy()
  assert np.isfinite(x).all() and np.allclose(x.sum(-1), 1)
  assert np.isfinite(tape.gradient(loss, logits).numpy()).all()


@pytest.mark.parametrize('cls', [dists.NormalDist, dists.TanhNormalDist])
def test_gaussian_samplers_at_edge_draws_are_finite(cls):
  mean = tf.Variable(tf.fill([len(EDGE_U), 1], 0.5))
  std = tf.Variable(tf.fill([len(EDGE_U), 1], 0.1))
  u = tf.constant(np.array(EDGE_U, np.float32)[:, None])
  with tf.GradientTape() as tape:
    x = cls(mean, std).sample(StepNoise(u))
    loss = tf.reduce_sum(x)
  assert np.isfinite(x.numpy()).all()
  assert all(np.isfinite(g.numpy()).all() for g in tape.gradient(loss, [mean, std]))


def test_step_noise_normal_is_finite_at_edge_draws():
  z = StepNoise(tf.constant(EDGE_U, tf.float32)).normal([len(EDGE_U)]).numpy()
  assert np.isfinite(z).all() and np.all(np.diff(z) >= 0)


def test_trunc_normal_mode_is_tfps_mode_the_clipped_mean_the_paper_acts_with():
  # The paper's eval policy acts with `actor.mode()`, TFP's TruncatedNormal mode (the peak of
  # the density), which differs from the truncated mean wherever the bounds cut off mass.
  mean, std, _ = _grid()
  got = dists.TruncNormalDist(mean, std).mode().numpy()
  want = tfp.distributions.TruncatedNormal(mean, std, -1.0, 1.0).mode().numpy()
  np.testing.assert_array_equal(got, want)
