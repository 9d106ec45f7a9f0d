"""Use a trained agent: evaluate a run, export its policy, act with it outside this package."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.test_train_cli import imports_tensorflow

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}


def script(name, args, check=True, timeout=600, flags=()):
  """Runs scripts/`name` with `args` (`flags`: the interpreter's, before the script)."""
  proc = subprocess.run([sys.executable, *flags, str(ROOT / 'scripts' / name), *args],
                        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f'{name} exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}')
  return proc


def snapshot(folder):
  return {str(p): p.stat().st_mtime_ns for p in pathlib.Path(folder).rglob('*') if p.is_file()}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  logdir = tmp_path_factory.mktemp('run')
  script('train.py', ['--configs', 'atari', 'debug', '--task', 'pong', '--logdir', str(logdir),
                      '--steps', '250'])
  return logdir


def test_eval_reads_the_run_and_writes_nothing_there(run, tmp_path):
  before = snapshot(run)
  proc = script('eval.py', ['--logdir', str(run), '--episodes', '2', '--seed', '3',
                            '--video', str(tmp_path / 'ep.gif'), '--json', str(tmp_path / 'r.json')])
  assert snapshot(run) == before
  result = json.loads((tmp_path / 'r.json').read_text())
  assert len(result['returns']) == 2 and result['task'] == 'atari_pong'
  assert f'return {np.mean(result["returns"]):.2f} ± {np.std(result["returns"]):.2f}' in proc.stdout
  random, gamer = -20.7, 14.6  # Pong's random and human-gamer scores (shared/scores/baselines.json).
  np.testing.assert_allclose(result['gamer_normalized'],
                             (result['mean'] - random) / (gamer - random), rtol=1e-6)
  assert (tmp_path / 'ep.gif').read_bytes()[:6] in (b'GIF87a', b'GIF89a')


@pytest.mark.parametrize('args,message', [
    (['--logdir', '/nonexistent/run'], "logdir '/nonexistent/run' does not exist"),
    (['--episodes', '0'], '--episodes must be at least 1'),
    (['--checkpoint', '123456789'], "checkpoint '123456789' is not in {run}/checkpoints; "
                                    "available: {available}"),
])
def test_eval_bad_input_is_a_one_line_error(run, args, message):
  args = args if args[0] == '--logdir' else ['--logdir', str(run), *args]
  # Answered before TensorFlow's import: in about a second, not ten.
  proc = script('eval.py', args, check=False, flags=['-X', 'importtime'])
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  names = sorted((run / 'checkpoints').glob('ckpt-*.index'), key=lambda p: int(p.stem[5:]))
  message = message.format(run=run, available=', '.join(p.stem for p in names))
  assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
  assert 'Traceback' not in proc.stderr and not imports_tensorflow(proc.stderr)


def test_checkpoint_list_reads_as_tensorflow_reads_it(tmp_path):
  # The list is read without TensorFlow; escaped characters, relative and absolute paths.
  import tensorflow as tf
  from dreamerv2_tf.evaluate import checkpoint_paths
  folder = tmp_path / 'dir "q" \\ é'
  folder.mkdir()
  paths = ['ckpt-1', str(folder / 'ckpt-2 "é"'), 'ckpt-3']
  tf.compat.v1.train.update_checkpoint_state(str(folder), paths[-1], all_model_checkpoint_paths=paths)
  state = tf.train.get_checkpoint_state(str(folder))
  assert checkpoint_paths(folder) == (state.model_checkpoint_path,
                                      list(state.all_model_checkpoint_paths))
  assert checkpoint_paths(tmp_path) == (None, [])


def test_eval_without_checkpoints_is_a_clear_error(tmp_path):
  (tmp_path / 'config.yaml').write_text((ROOT / 'configs.yaml').read_text()[:0] + 'task: x\n')
  proc = script('eval.py', ['--logdir', str(tmp_path)], check=False)
  assert proc.returncode == 2 and 'no checkpoints' in proc.stderr, proc.stderr


def test_eval_video_of_a_task_without_images_is_a_clear_error(tmp_path):
  # CartPole observes a vector: --video used to play every episode and write nothing.
  from dreamerv2_tf.config import ConfigError, load_config
  from dreamerv2_tf.evaluate import evaluate
  load_config(['debug'], ['--task', 'gym:CartPole-v1']).save(tmp_path / 'config.yaml')
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'checkpoints' / 'ckpt-1.index').write_bytes(b'')
  (tmp_path / 'checkpoints' / 'checkpoint').write_text('model_checkpoint_path: "ckpt-1"\n'
                                                       'all_model_checkpoint_paths: "ckpt-1"\n')
  with pytest.raises(ConfigError, match=r"--video '.*ep.gif': gym:CartPole-v1 has no image "
                                        r"observation to record \(its keys: .*vector"):
    evaluate(tmp_path, episodes=1, video=str(tmp_path / 'ep.gif'))
  assert not (tmp_path / 'ep.gif').exists()


PLAY = '''
import sys
# The exported model must load and act with TensorFlow alone.
for name in ('dreamerv2_tf', 'tensorflow_probability', 'tf_keras'):
  sys.modules[name] = None
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2])
state = model.initial_state(tf.constant(1, tf.int32))
actions = []
for t in range(len(data['image'])):
  out = model.step(dict(image=data['image'][t:t + 1], is_first=data['is_first'][t:t + 1],
                        **{k: v for k, v in state.items()}))
  state = {k: v for k, v in out.items() if k.startswith('state_')}
  actions.append(out['action'].numpy()[0])
np.save(sys.argv[3], np.array(actions))
'''


def test_exported_policy_acts_like_the_agent_without_this_package(run, tmp_path):
  out = tmp_path / 'policy'
  script('export.py', ['--logdir', str(run), '--out', str(out)])
  info = json.loads((out / 'assets.extra' / 'spaces.json').read_text())
  assert info['action'] == {'type': 'discrete', 'n': 6, 'format': 'one-hot float32'}
  assert info['observation']['image'] == {'shape': [64, 64, 1], 'dtype': 'uint8'}
  assert (out / 'assets.extra' / 'config.yaml').exists()
  cli = pathlib.Path(sys.executable).parent / 'saved_model_cli'
  shown = subprocess.run([str(cli), 'show', '--dir', str(out), '--all'], capture_output=True,
                         text=True, env=ENV).stdout
  for name in ("signature_def['step']", "signature_def['step_sample']",
               "signature_def['initial_state']", "inputs['state_deter']", "outputs['action']"):
    assert name in shown
  # A whole episode with the in-process eval policy (posterior mode, as `step` exports it).
  from dreamerv2_tf.evaluate import load_run
  from dreamerv2_tf.envs import make_envs
  config, agent, _, _ = load_run(run, overrides={'eval_state_mean': True})
  env = make_envs(None, config, 'eval', 1)
  obs, state, record, actions = env.reset(), None, [], []
  while True:
    record.append({k: obs[k][0] for k in ('image', 'is_first')})
    outputs, state = agent.policy(obs, state, 'eval')
    actions.append(outputs['action'][0])
    obs = env.step(outputs)
    if obs['is_last'][0]:
      break
  env.close()
  np.savez(tmp_path / 'obs.npz', image=np.stack([r['image'] for r in record]),
           is_first=np.stack([r['is_first'] for r in record]))
  proc = subprocess.run([sys.executable, '-c', PLAY, str(out), str(tmp_path / 'obs.npz'),
                         str(tmp_path / 'actions.npy')], capture_output=True, text=True,
                        env=ENV, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  exported = np.load(tmp_path / 'actions.npy')
  assert len(exported) == len(actions) >= 50
  np.testing.assert_array_equal(exported.argmax(-1), np.stack(actions).argmax(-1))


def test_export_refuses_to_overwrite_without_force(run, tmp_path):
  (tmp_path / 'x').mkdir()
  (tmp_path / 'x' / 'keep').write_text('mine')
  proc = script('export.py', ['--logdir', str(run), '--out', str(tmp_path / 'x')], check=False,
                flags=['-X', 'importtime'])
  assert proc.returncode == 2 and '--force' in proc.stderr and not imports_tensorflow(proc.stderr)
  proc = script('export.py', ['--logdir', str(run), '--out', str(tmp_path / 'y'), '--checkpoint',
                              '7'], check=False, flags=['-X', 'importtime'])
  assert proc.returncode == 2 and "error: checkpoint '7' is not in" in proc.stderr
  assert not imports_tensorflow(proc.stderr) and not (tmp_path / 'y').exists()
  assert (tmp_path / 'x' / 'keep').read_text() == 'mine'


def test_example_client_plays_with_the_exported_model(run, tmp_path):
  out = tmp_path / 'policy'
  script('export.py', ['--logdir', str(run), '--out', str(out)])
  proc = subprocess.run([sys.executable, str(ROOT / 'examples' / 'play_savedmodel.py'), str(out),
                         '--episodes', '1'], capture_output=True, text=True, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'episode 1: return' in proc.stdout  # A whole game of Pong, through ale-py directly.


def test_precision_check_compares_each_precision_on_the_runs_own_weights(run, tmp_path):
  before = snapshot(run)
  script('precision_check.py', ['--logdir', str(run), '--precisions', 'bf16', '16',
                                '--batches', '2', '--json', str(tmp_path / 'p.json')])
  assert snapshot(run) == before
  rows = {(r['net'], r['compared']): r for r in json.loads((tmp_path / 'p.json').read_text())['rows']}
  for net in ('model', 'actor', 'critic'):
    # The yardsticks differ (other noise, another batch); so does each precision, a little.
    for compared in ('float32, other sampling noise', 'float32, the next batch',
                     'mixed bfloat16', 'mixed float16'):
      assert 0 < rows[net, compared]['relative'], (net, compared)
    for compared in ('mixed bfloat16', 'mixed float16'):
      row = rows[net, compared]
      assert row['relative'] < 0.5 and row['cosine'] > 0.8, row
      # The run's weights, copied into each precision's agent: the same loss within rounding
      # (the actor's loss is a small difference of terms, so its rounding shows more).
      tol = 0.01 if net == 'model' else 0.05
      assert abs(row['loss'] - row['loss_float32']) <= tol * abs(row['loss_float32']), row
    # Whether a difference repeats across batches; not defined between batches.
    assert rows[net, 'float32, the next batch']['correlation'] is None
    for compared in ('float32, other sampling noise', 'mixed bfloat16', 'mixed float16'):
      assert -1 <= rows[net, compared]['correlation'] <= 1, (net, compared)


def test_precision_check_correlation_tells_a_bias_from_noise():
  spec = importlib.util.spec_from_file_location('precision_check',
                                                ROOT / 'scripts' / 'precision_check.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  rng = np.random.default_rng(0)
  bias = rng.normal(size=10_000)
  noise = [rng.normal(size=10_000) for _ in range(4)]
  # The same error every batch (plus a little noise) is a bias; independent errors are not.
  assert module.correlation([bias + 0.1 * e for e in noise]) > 0.98
  assert abs(module.correlation(noise)) < 0.05
  assert abs(module.correlation(noise[:2])) < 0.05  # One pair for two batches.
  assert module.correlation([bias, -bias]) == pytest.approx(-1)


def test_precision_check_bad_input_is_a_one_line_error(run):
  proc = script('precision_check.py', ['--logdir', str(run), '--precisions', '8'], check=False)
  assert proc.returncode == 2 and "'8' is not one of bf16, 16" in proc.stderr.splitlines()[-1]
