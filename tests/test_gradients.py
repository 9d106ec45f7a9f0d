"""Gradient checks: straight-through samples, KL balancing, and grad_heads."""
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf import dists, load_config
from dreamerv2_tf.agent import Agent
from dreamerv2_tf.synthetic import make_batch, make_spaces


@pytest.mark.parametrize('method', ['sample', 'mode'])
def test_straight_through_onehot_passes_probability_gradients(method):
  rng = np.random.default_rng(0)
  logits = tf.constant(rng.normal(size=(5, 32, 32)), tf.float32)
  coef = tf.constant(rng.normal(size=(5, 32, 32)), tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(logits)
    dist = dists.OneHotDist(logits, event_dims=1)
    x = getattr(dist, method)()
    got = tf.reduce_sum(x * coef)
    want = tf.reduce_sum(tf.nn.softmax(logits) * coef)
  # Forward: exact one-hot vectors. Backward: the gradient of the probabilities.
  np.testing.assert_allclose(tf.reduce_sum(x, -1).numpy(), 1.0, rtol=1e-6)
  assert set(np.unique(np.round(x.numpy(), 5))) <= {0.0, 1.0}
  g_got, g_want = tape.gradient(got, logits), tape.gradient(want, logits)
  assert np.abs(g_got.numpy()).sum() > 0
  np.testing.assert_allclose(g_got.numpy(), g_want.numpy(), rtol=1e-5, atol=1e-7)


def _rssm_and_states(balance=0.8, free=0.0):
  config = load_config(['atari', 'debug'], ['--kl.balance', str(balance), '--kl.free', str(free)])
  agent = Agent(config, *make_spaces())
  rng = np.random.default_rng(1)
  shape = (3, 4, config.rssm.stoch, config.rssm.discrete)
  post = {'logits': tf.constant(rng.normal(size=shape), tf.float32)}
  prior = {'logits': tf.constant(rng.normal(size=shape), tf.float32)}
  return agent.wm.rssm, post, prior, config


def test_kl_balancing_value_matches_reference():
  rssm, post, prior, config = _rssm_and_states()
  loss, value = rssm.kl_loss(post, prior, **config.kl.to_dict())
  lq = tf.nn.log_softmax(post['logits']).numpy()
  lp = tf.nn.log_softmax(prior['logits']).numpy()
  kl = (np.exp(lq) * (lq - lp)).sum((-2, -1))  # Summed over the 32 categoricals.
  np.testing.assert_allclose(value.numpy(), kl, rtol=1e-5)
  # Both directions have the same value; balancing only splits the gradient.
  np.testing.assert_allclose(loss.numpy(), kl.mean(), rtol=1e-5)


def test_kl_balancing_splits_gradient_alpha_to_prior():
  alpha = 0.8
  rssm, post, prior, config = _rssm_and_states(alpha)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([post['logits'], prior['logits']])
    loss, _ = rssm.kl_loss(post, prior, **config.kl.to_dict())
    plain = tf.reduce_mean(rssm.get_dist(post).dist.kl_divergence(rssm.get_dist(prior).dist))
  for key, state, share in (('prior', prior, alpha), ('post', post, 1 - alpha)):
    got = tape.gradient(loss, state['logits']).numpy()
    want = tape.gradient(plain, state['logits']).numpy()
    assert np.abs(want).max() > 1e-4, key
    np.testing.assert_allclose(got, share * want, rtol=1e-4, atol=1e-7, err_msg=key)


def test_free_nats_clip_the_average():
  rssm, post, prior, config = _rssm_and_states(0.8, free=1e6)
  with tf.GradientTape() as tape:
    tape.watch(prior['logits'])
    loss, value = rssm.kl_loss(post, prior, **config.kl.to_dict())
  np.testing.assert_allclose(loss.numpy(), 1e6)  # Below the free nats: constant loss...
  grad = tape.gradient(loss, prior['logits'])
  assert grad is None or np.abs(grad.numpy()).max() == 0  # ...and no gradient.


def _encoder_grads(grad_heads):
  config = load_config(['atari', 'debug'], ['--grad_heads', grad_heads])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  data = agent.wm.preprocess(make_batch(obs_space, act_space))
  with tf.GradientTape(persistent=True) as tape:
    _, _, metrics = agent.wm.loss(data)
  variables = agent.wm.encoder.trainable_variables
  norm = lambda loss: tf.linalg.global_norm(
      [g for g in tape.gradient(loss, variables) if g is not None] or [tf.zeros(())]).numpy()
  return {k: norm(metrics[f'{k}_loss']) for k in ('reward', 'discount', 'image')}


def test_grad_heads_stop_gradients_into_representation():
  only_decoder = _encoder_grads('decoder')
  assert only_decoder['image'] > 0
  assert only_decoder['reward'] == 0
  assert only_decoder['discount'] == 0
  all_heads = _encoder_grads('decoder,reward,discount')
  assert all_heads['reward'] > 0 and all_heads['discount'] > 0


def test_dynamics_backprop_reaches_actor_through_the_model():
  """With actor_grad dynamics, the actor learns through imagined states, not log-probs."""
  config = load_config(['atari', 'debug'], ['--actor_grad', 'dynamics', '--actor_ent', '0'])
  obs_space, act_space = make_spaces()
  agent = Agent(config, obs_space, act_space)
  data = agent.wm.preprocess(make_batch(obs_space, act_space))
  post = agent.wm.loss(data)[1]['post']
  with tf.GradientTape() as tape:
    seq = agent.wm.imagine(agent.ac.actor, post, data['is_terminal'], 3)
    seq['reward'] = agent.wm.heads['reward'](seq['feat']).mode()
    target, _ = agent.ac.target(seq)
    loss, _ = agent.ac.actor_loss(seq, target)
  grads = tape.gradient(loss, agent.ac.actor.trainable_variables)
  assert tf.linalg.global_norm([g for g in grads if g is not None]).numpy() > 0
