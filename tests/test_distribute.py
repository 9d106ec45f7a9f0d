"""Data parallelism with tf.distribute: equal updates, multi-worker runs, strategy choice."""
import json
import socket
import os
import pathlib
import subprocess
import sys

import pytest

from tests.test_train_cli import imports_tensorflow

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}


def run_step(*args):
  proc = subprocess.run([sys.executable, str(ROOT / 'tests' / 'distributed_step.py'), *args],
                        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('args,steps,tol', [
    # Free nats active (the debug KL is ~0.13) and a moving reward normaliser, which take their
    # batch statistic from all replicas; continuous actions (truncated-normal samples, dynamics
    # backprop); Plan2Explore beside the task behaviour: the ensemble, its optimizer, the
    # intrinsic-reward normaliser (moving, so its statistic must be global) and the exploration
    # actor-critic. Two steps: the second starts from Adam moments and a moved slow critic.
    (('--continuous', '--kl.free', '0.1', '--reward_norm.momentum', '0.5',
      '--expl_behavior', 'plan2explore', '--expl_reward_norm.momentum', '0.5'), 2, 1e-5),
    # mixed_float16 with loss scaling (its skip-or-apply decision is taken across replicas).
    # At these seeded weights and the starting scale 2^15, replicas that differentiated their
    # local mean (gradients twice the single-device size) overflowed where one device did not.
    # One step: float16 sums in a different order can overflow on one side only, later.
    (('--precision', '16'), 1, 1e-3),
])
def test_mirrored_two_replicas_equal_single_device_updates(args, steps, tol):
  # From the same checkpoint on the same global batch, the metrics and every updated weight
  # and optimizer slot (on both replicas) match the default strategy. Tolerance: relative on
  # metrics, absolute on weights; float32 differs by ~1e-7 (summation order), float16 more.
  out = run_step('--steps', str(steps), *args)
  assert out['replicas'] == 2
  for step in range(steps):
    worst = max(out[f'metric_diff_{step}'].items(), key=lambda kv: kv[1])
    assert worst[1] < tol, worst
  assert out['weight_diff'] < tol
  assert out['weight_moved'] > 1e-4  # The steps did change the weights.
  assert 'model_loss' in out['metric_keys'] and 'actor_loss' in out['metric_keys']


def free_ports(count):
  socks = [socket.socket() for _ in range(count)]
  for s in socks:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def run_cluster(logdir, steps):
  """Runs two local workers of scripts/train.py to completion; returns their outputs."""
  cluster = {'worker': [f'localhost:{p}' for p in free_ports(2)]}
  args = [sys.executable, str(ROOT / 'scripts' / 'train.py'), '--configs', 'debug',
          '--task', 'gym:CartPole-v1', '--strategy', 'multi_worker', '--logdir', str(logdir),
          '--steps', str(steps), '--prefill', '100', '--eval_every', '200', '--log_every', '100',
          '--train_every', '20', '--eval_eps', '1']
  procs = []
  for index in range(2):
    tf_config = json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}})
    procs.append(subprocess.Popen(args, env={**ENV, 'TF_CONFIG': tf_config}, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = []
  try:
    for proc in procs:
      outs.append(proc.communicate(timeout=600)[0])
  finally:
    for proc in procs:
      proc.kill()
  for index, proc in enumerate(procs):  # A crash in one worker aborts the other: show both.
    assert proc.returncode == 0, '\n'.join(f'--- worker {i}\n{out[-2500:]}'
                                            for i, out in enumerate(outs))
  return outs


def test_multi_worker_two_local_processes(tmp_path):
  # Two workers on loopback ports train the debug agent together. Both finish, each keeps its
  # own replay, and only the chief (worker 0) writes logs and checkpoints.
  logdir = tmp_path / 'run'
  outs = run_cluster(logdir, 300)
  assert '2 replica(s)' in outs[0] and 'not the chief' in outs[1]
  ckpts = sorted(p.name for p in logdir.rglob('ckpt-*.index'))
  assert ckpts and all(p.parent == logdir / 'checkpoints' for p in logdir.rglob('ckpt-*'))
  assert (logdir / 'metrics.jsonl').exists() and (logdir / 'config.yaml').exists()
  recs = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]
  assert any('model_loss' in r for r in recs)
  worker = logdir / 'workers' / 'worker1'
  assert list((worker / 'train_episodes').glob('*.npz'))
  assert list((logdir / 'train_episodes').glob('*.npz'))
  assert not list(worker.rglob('metrics.jsonl')) and not list(worker.rglob('events.out.*'))
  assert len(list(logdir.rglob('metrics.jsonl'))) == 1
  # Both workers resume from the chief's checkpoint and go on to the new step count.
  outs = run_cluster(logdir, 400)
  assert all('Resumed from' in out for out in outs)
  assert 'ckpt-400.index' in {p.name for p in (logdir / 'checkpoints').glob('*.index')}
  assert not list(worker.rglob('ckpt-*'))


@pytest.mark.parametrize('extra,env,message', [
    ([], {}, 'needs the TF_CONFIG environment variable'),
    ([], {'TF_CONFIG': '{"cluster": '}, 'TF_CONFIG is not valid JSON'),
])
def test_multi_worker_bad_setup_is_a_one_line_error(tmp_path, extra, env, message):
  env = {k: v for k, v in {**ENV, **env}.items() if k != 'TF_CONFIG' or 'TF_CONFIG' in env}
  proc = subprocess.run(
      [sys.executable, '-X', 'importtime', str(ROOT / 'scripts' / 'train.py'), '--configs',
       'debug', '--task', 'gym:CartPole-v1', '--strategy', 'multi_worker', '--logdir',
       str(tmp_path / 'run'), *extra], capture_output=True, text=True, env=env, cwd=ROOT,
      timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith('error')]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert not (tmp_path / 'run').exists()
  assert not imports_tensorflow(proc.stderr)  # Answered before TensorFlow's import.


def test_mirrored_cli_run_resumes_under_the_default_strategy(tmp_path):
  # What a user on a machine without GPUs sees: mirrored runs on the one CPU (with a warning),
  # and its checkpoint resumes under another strategy (the strategy is not part of the state).
  logdir = tmp_path / 'run'
  base = [sys.executable, str(ROOT / 'scripts' / 'train.py'), '--configs', 'debug', '--task',
          'gym:CartPole-v1', '--logdir', str(logdir), '--prefill', '100', '--eval_every', '200',
          '--log_every', '100', '--train_every', '20', '--eval_eps', '1']
  first = subprocess.run(base + ['--strategy', 'mirrored', '--steps', '300'], capture_output=True,
                         text=True, env=ENV, cwd=ROOT, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'Strategy: mirrored, 1 replica(s)' in first.stdout
  assert 'mirrored sees one device' in first.stderr
  second = subprocess.run(base + ['--steps', '400'], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resumed from' in second.stdout and 'Strategy: default' in second.stdout
  assert (logdir / 'checkpoints' / 'ckpt-400.index').exists()
