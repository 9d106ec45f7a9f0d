"""The fast paths: the policy under XLA, its concrete-function cache, `policy_xla`, oneDNN."""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from dreamerv2_tf import Agent, load_config, precision
from dreamerv2_tf.config import ConfigError
from dreamerv2_tf.synthetic import make_batch, make_spaces


def observations(batch, seed=0):
  obs_space, act_space = make_spaces()
  data = make_batch(obs_space, act_space, batch=batch, length=3, seed=seed)
  return [{k: v[:, t] for k, v in data.items() if k != 'action'} for t in range(3)]


def test_xla_eval_policy_matches_the_plain_path():
  config = load_config(['debug'], ['--eval_state_mean', 'true', '--precision', '32'])
  agent = Agent(config, *make_spaces())
  plain = agent._compile_policy('eval', xla=False)
  xla = agent._compile_policy('eval', xla=True)
  states = {'plain': agent.initial_state(3), 'xla': agent.initial_state(3)}
  for obs in observations(3):  # Three steps, each path carrying its own state.
    inputs = {k: obs[k] for k in ('image', 'is_first')}
    out_plain, states['plain'] = plain(inputs, states['plain'])
    out_xla, states['xla'] = xla(inputs, states['xla'])
    np.testing.assert_array_equal(out_xla['action'].numpy().argmax(-1),
                                  out_plain['action'].numpy().argmax(-1))
    np.testing.assert_allclose(states['xla'][0]['deter'].numpy(),
                               states['plain'][0]['deter'].numpy(), atol=1e-4)


def test_xla_sampling_is_random_and_never_retraces():
  agent = Agent(load_config(['debug'], ['--policy_xla', 'true']), *make_spaces())
  obs = observations(1)[0]
  actions = []
  for _ in range(40):  # The same observation and start state: only the sampling differs.
    out, _ = agent.policy(obs, None, 'train')
    actions.append(int(out['action'].argmax()))
  # The untrained actor is close to uniform over 6 actions.
  assert len(set(actions)) >= 3, actions
  state = None
  for step, obs in enumerate(observations(1, seed=1)):  # None, then returned states.
    # is_first as 0/1 integers must not give the function a second input signature.
    obs = {**obs, 'is_first': obs['is_first'].astype(np.int64)} if step == 1 else obs
    _, state = agent.policy(obs, state, 'train')
  assert agent._policy_fns['train'].function.experimental_get_tracing_count() == 1
  with pytest.raises(ValueError, match="obs lacks key 'image'"):
    agent.policy({'is_first': np.ones(1, bool)}, None, 'train')


def test_policy_xla_config_values():
  assert load_config().policy_xla == 'auto'
  # auto: XLA for float32 (and on GPU); not for bfloat16 on CPU, where XLA measured slower.
  assert precision.policy_xla('auto', '32') and precision.policy_xla('auto', 'float32')
  assert precision.policy_xla('auto', 'bf16') == precision.has_gpu()
  assert load_config([], ['--policy_xla', 'false']).policy_xla == 'false'
  assert load_config().update({'policy_xla': True}).policy_xla == 'true'  # YAML booleans.
  assert not precision.policy_xla('false') and precision.policy_xla(True)
  with pytest.raises(ConfigError, match='policy_xla'):
    load_config([], ['--policy_xla', 'sometimes'])


def test_cpu_acting_computes_in_float32_while_training_in_bfloat16(tmp_path):
  # On CPU the bf16-trained agent acts in float32 (faster at batch 1): its eval step equals a
  # float32 agent's with the same weights, and the layers go back to bf16 for training.
  import tensorflow as tf
  config = load_config(['debug'], ['--eval_state_mean', 'true'])
  spaces = make_spaces()
  agents = {p: Agent(config.update({'precision': p}), *spaces) for p in ('bf16', '32')}
  path = tf.train.Checkpoint(agent=agents['bf16']).write(str(tmp_path / 'ckpt'))
  tf.train.Checkpoint(agent=agents['32']).read(path).assert_existing_objects_matched()
  obs = observations(2)[0]
  states = {p: a.policy(obs, None, 'eval')[1] for p, a in agents.items()}
  if not precision.has_gpu():
    assert agents['bf16'].acting_dtype == 'float32'
    np.testing.assert_allclose(states['bf16'][0]['deter'].numpy(),
                               states['32'][0]['deter'].numpy(), atol=1e-6)
  agent = agents['bf16']
  assert agent.wm.encoder.compute_dtype == 'bfloat16'
  assert agent.wm.encoder.convs[0].compute_dtype == 'bfloat16'
  assert agent.ac.actor.hidden.denses[0].compute_dtype == 'bfloat16'
  batch = make_batch(*spaces, batch=2, length=4)
  assert np.isfinite(agent.train(batch)['model_loss'])


def test_keras_layers_reaches_every_variable_of_the_acting_networks():
  # acting_precision switches these layers to float32 while tracing the policy: a layer the
  # walk missed would still compute in bfloat16.
  import keras
  from dreamerv2_tf.acting import keras_layers
  agent = Agent(load_config(['debug']), *make_spaces())
  leaves = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.LayerNormalization)
  for root in (agent.wm.encoder, agent.wm.rssm, agent.ac.actor):
    found = keras_layers(root)
    assert root in found and len(found) == len({id(layer) for layer in found})
    owned = {id(v) for layer in found if isinstance(layer, leaves) for v in layer.weights}
    assert owned == {id(v) for v in root.weights}


def twin_agents(tmp_path, overrides):
  """Two float32 agents with the same weights, the second with `overrides`, and a batch."""
  import tensorflow as tf
  spaces = make_spaces()
  batch = make_batch(*spaces, batch=4, length=6, seed=2)
  base = load_config(['debug'], ['--precision', '32'])
  agents = [Agent(base, *spaces), Agent(base.update(overrides), *spaces)]
  path = tf.train.Checkpoint(agent=agents[0]).write(str(tmp_path / 'ckpt'))
  tf.train.Checkpoint(agent=agents[1]).read(path).assert_existing_objects_matched()
  return agents, batch


def train_twice(tmp_path, overrides, configure=None):
  """Metrics of one train step of two agents from the same checkpoint on the same batch."""
  agents, batch = twin_agents(tmp_path, overrides)
  if configure:
    configure(agents[1])
  return [agent.train(batch) for agent in agents]


def test_scan_loops_compute_what_the_unrolled_loops_compute(tmp_path):
  # tf.scan (the XLA path) and the Python-unrolled loops: same noise, same losses.
  def use_scan(agent):
    agent.wm.rssm.unroll = False
  unrolled, scanned = train_twice(tmp_path, {}, use_scan)
  for key in unrolled:
    assert abs(unrolled[key] - scanned[key]) <= 1e-5 * max(1.0, abs(unrolled[key])), key


class ConstNoise:
  """Noise as constants drawn by numpy while tracing: the same values under XLA and without.

  (TensorFlow's Philox kernels and XLA's produce different streams from the same key, so the
  agent's own noise cannot be compared across the two.)
  """

  def __init__(self):
    self._rng = np.random.default_rng(0)

  def uniform(self, shape):
    import tensorflow as tf
    return tf.constant(self._rng.uniform(size=[int(d) for d in shape]), tf.float32)

  def normal(self, shape):
    import tensorflow as tf
    return tf.constant(self._rng.normal(size=[int(d) for d in shape]), tf.float32)

  def steps(self, count, shape):
    return self.uniform([count, *shape])


def test_xla_train_step_matches_the_plain_step(tmp_path):
  # --xla true: the train step (scan loops) compiles in seconds and, with the same noise,
  # computes the plain step's losses and updates within 1e-4 (XLA fuses and reorders sums).
  import tensorflow as tf
  (plain, xla), batch = twin_agents(tmp_path, {'xla': True})
  assert xla.wm.rssm.unroll is False and plain.wm.rssm.unroll is True
  metrics = {}
  for name, agent, jit in (('plain', plain, False), ('xla', xla, True)):
    step = tf.function(lambda data: agent._train(data, ConstNoise()), jit_compile=jit,
                       autograph=False)
    metrics[name] = {k: float(v) for k, v in step(agent._check_batch(batch)).items()}
  for key, value in metrics['plain'].items():
    assert abs(value - metrics['xla'][key]) <= 1e-4 * max(1.0, abs(value)), key
  for a, b in zip(plain.weights_, xla.weights_):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def _run_python(code: str, **env) -> str:
  environ = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
  result = subprocess.run([sys.executable, '-c', code], env={**environ, **env},
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip()


@pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64'), reason='x86 only')
def test_harness_processes_get_onednn_whatever_they_or_their_parent_import_first():
  # The parity harness's side of ours imported TensorFlow before the package, so on an AVX2
  # CPU it ran on Eigen's kernels and the paper's side on oneDNN's (one Adam-slot row 4e-5
  # apart) unless its parent had set the switch. The launchers now pass it to every side.
  child = ('import os, tensorflow\nfrom dreamerv2_tf import onednn\n'
           'print({**os.environ, **onednn.child_env()}.get("TF_ENABLE_ONEDNN_OPTS"))')
  assert _run_python(child) == '1'
  assert _run_python(child, TF_ENABLE_ONEDNN_OPTS='0') == '0'  # The user's choice wins.
  side = ('from tests.reference.ours import setup_tensorflow\nsetup_tensorflow()\n'
          'from tensorflow.python.util import _pywrap_util_port as port\n'
          'print(port.IsMklEnabled())')
  assert _run_python(side) == 'True'


@pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64'), reason='x86 only')
def test_importing_the_package_first_runs_tensorflow_on_onednn_kernels():
  # TensorFlow leaves oneDNN off on x86 CPUs without AVX-512 VNNI/BF16 or AMX (its Eigen
  # convolution gradients made the paper's dmc_vision step 3x slower on an AVX2 EPYC).
  probe = ('import os, dreamerv2_tf, tensorflow\n'
           'from tensorflow.python.util import _pywrap_util_port as port\n'
           'print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), port.IsMklEnabled())')
  assert _run_python(probe) == '1 True'
  assert _run_python(probe, TF_ENABLE_ONEDNN_OPTS='0') == '0 False'  # The user's choice wins.
  # TensorFlow imported first has read the switch already: the package leaves it alone.
  late = 'import os, tensorflow, dreamerv2_tf; print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"))'
  assert _run_python(late) == 'None'
