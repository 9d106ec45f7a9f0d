"""CLI smoke runs of scripts/train.py with tiny models: finish, leave a run behind, resume."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(ROOT / 'scripts' / 'train.py')]
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'MUJOCO_GL': os.environ.get('MUJOCO_GL', 'egl')}


def run(args, timeout=600, check=True, flags=(), env=None):
  """Runs scripts/train.py with `args`; `flags` go to the interpreter (e.g. -X importtime);
  `env`: the environment variables (default: `ENV`)."""
  proc = subprocess.run([TRAIN[0], *flags, *TRAIN[1:], *args], capture_output=True, text=True,
                        timeout=timeout, env=ENV if env is None else env, cwd=ROOT)
  if check and proc.returncode != 0:
    raise AssertionError(f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
  return proc


def imports_tensorflow(stderr):
  """Whether a process run with `python -X importtime` imported TensorFlow."""
  # Its line ends in '|' and the module's name, indented by its depth in the import tree.
  return any(line.startswith('import time:') and line.rsplit('|', 1)[-1].strip() == 'tensorflow'
             for line in stderr.splitlines())


def records(logdir):
  lines = (pathlib.Path(logdir) / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line) for line in lines]


def checkpoints(logdir):
  """Checkpoint numbers (agent steps), ascending."""
  paths = (pathlib.Path(logdir) / 'checkpoints').glob('ckpt-*.index')
  return sorted(int(p.name[len('ckpt-'):-len('.index')]) for p in paths)


def episodes(logdir, kind='train'):
  return sorted((pathlib.Path(logdir) / f'{kind}_episodes').glob('*.npz'))


def assert_run(logdir, steps, repeat=1):
  recs = records(logdir)
  assert recs and all('step' in r for r in recs)
  assert any('train_return' in r for r in recs) and any('eval_return' in r for r in recs)
  assert any('model_loss' in r for r in recs)
  # The loop's time split: shares of each log period that add up to one, and the env's speed.
  timed = [r for r in recs if 'time_share_train' in r]
  assert timed and all(r['env_fps'] > 0 for r in timed)
  for r in timed:
    parts = ('env', 'policy', 'replay', 'train', 'eval', 'other')
    assert abs(sum(r[f'time_share_{p}'] for p in parts) - 1) < 1e-3, r
  # Logged steps are frames; the last checkpoint is numbered in agent steps, saved at the end.
  assert 0.8 * steps * repeat <= max(r['step'] for r in recs) <= (steps + 2) * repeat
  # With several envs a batched step may overshoot by up to envs - 1 steps.
  assert episodes(logdir) and steps <= checkpoints(logdir)[-1] <= steps + 1
  assert (pathlib.Path(logdir) / 'config.yaml').exists()
  assert list(pathlib.Path(logdir).glob('events.out.tfevents.*'))


@pytest.mark.parametrize('name,args,repeat,steps', [
    ('atari', ['--configs', 'atari', 'debug', '--task', 'pong'], 4, 400),
    # Only atari's run is resumed here (gym's in test_a_stop_leaves_the_evaluation_steps_...).
    # The others stop at 200 steps where they cost the most: past the prefill (100) and its
    # evaluation, a log period and a finished episode are all their checks need.
    ('dmc', ['--configs', 'dmc_vision', 'debug', '--task', 'walker_walk'], 2, 200),
    ('gym', ['--configs', 'debug', '--task', 'gym:CartPole-v1', '--envs', '2'], 1, 400),
    ('crafter', ['--configs', 'crafter', 'debug', '--task', 'crafter_reward'], 1, 200),
])
def test_smoke_run_then_resume(tmp_path, name, args, repeat, steps):
  logdir = tmp_path / name
  proc = run(args + ['--logdir', str(logdir), '--steps', str(steps)])
  assert f'Logdir: {logdir}' in proc.stdout
  assert_run(logdir, steps, repeat)
  if name == 'crafter':  # Achievements are logged per episode.
    assert any('train_max_achievement_collect_wood' in r for r in records(logdir))
    assert any('train_sum_reward' in r for r in records(logdir))  # log_keys_sum: ^log_reward$
    return  # Its resume is atari's (images, discrete actions): not run twice.
  if name in ('dmc', 'gym'):
    return
  first_steps = max(r['step'] for r in records(logdir))
  first_episodes = len(episodes(logdir))
  proc = run(args + ['--logdir', str(logdir), '--steps', '700'])
  assert 'Resumed from' in proc.stdout and 'Prefill' not in proc.stdout
  steps = [r['step'] for r in records(logdir)]
  assert 702 * repeat >= max(steps) > first_steps
  assert 700 <= checkpoints(logdir)[-1] <= 701
  assert len(episodes(logdir)) > first_episodes


def test_eval_episodes_shorter_than_the_training_length(tmp_path):
  # Pong episodes end at a 30-step time limit, before one 40-step training chunk: the eval
  # report has nothing to sample and waits instead of failing the run (it did fail).
  args = ['--configs', 'atari', 'debug', '--task', 'pong', '--logdir', str(tmp_path),
          '--steps', '140', '--prefill', '50', '--eval_every', '60', '--eval_eps', '1',
          '--time_limit', '30', '--dataset.length', '40']
  run(args)
  assert sum('eval_return' in r for r in records(tmp_path)) >= 2
  assert checkpoints(tmp_path)[-1] == 140


def test_episodes_all_shorter_than_minlen_is_a_clear_error(tmp_path):
  # Random CartPole episodes last about 20 steps: none reaches 200, so there is nothing to train
  # on. One line that names the key, not a traceback; the run then goes on with a lower minlen.
  args = ['--configs', 'debug', '--task', 'gym:CartPole-v1', '--logdir', str(tmp_path),
          '--steps', '200', '--prefill', '150']
  proc = run(args + ['--replay.minlen', '200', '--replay.maxlen', '200'], check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'replay.minlen=200' in proc.stderr.strip().splitlines()[-1]
  run(args)
  assert checkpoints(tmp_path)[-1] == 200


def test_a_stop_leaves_the_evaluation_steps_of_the_run(tmp_path):
  # A run stopped between evaluations and resumed evaluates where it would have without the
  # stop: at prefill end (100), 200 and 300 (a run of 400 steps in one go evaluates there),
  # not also at the resume (250). In the paper's code, and here before, the resume evaluated at
  # once and moved the later evaluations.
  args = ['--configs', 'debug', '--task', 'gym:CartPole-v1', '--eval_every', '100',
          '--log_every', '1000']
  def evals(logdir):
    return [r['step'] for r in records(logdir) if 'eval_return' in r]
  run(args + ['--logdir', str(tmp_path), '--steps', '250'])
  first_episodes = len(episodes(tmp_path))
  proc = run(args + ['--logdir', str(tmp_path), '--steps', '400'])
  assert 'Resumed from' in proc.stdout and 'Prefill' not in proc.stdout
  assert 'next evaluation at 300 frames' in proc.stdout
  assert evals(tmp_path) == [100, 200, 300]
  assert checkpoints(tmp_path)[-1] == 400 and len(episodes(tmp_path)) > first_episodes
  # The last period of a run (here shorter than log_every) is logged at its end or stop.
  trained = [r['step'] for r in records(tmp_path) if 'time_share_train' in r]
  assert 250 in trained and trained[-1] == 400
  # The random-policy episode after the prefill (as the paper's train.py), once per run.
  assert [r['step'] for r in records(tmp_path) if 'eval_random_return' in r] == [100]
  # A resume with another network is one line, answered before TensorFlow's import.
  proc = run(args + ['--logdir', str(tmp_path), '--rssm.deter', '64'], check=False,
             flags=('-X', 'importtime'))
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'rssm.deter 32 -> 64' in proc.stderr and not imports_tensorflow(proc.stderr)


def _start(args):
  return subprocess.Popen(TRAIN + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=ENV, cwd=ROOT)


def _wait_for(predicate, proc, timeout=300):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() - start < timeout, 'timed out'
    time.sleep(0.5)


def test_sigkill_then_resume_from_last_checkpoint(tmp_path):
  args = ['--configs', 'debug', '--task', 'gym:CartPole-v1', '--logdir', str(tmp_path),
          '--eval_every', '200', '--steps', '100000']
  proc = _start(args)
  _wait_for(lambda: len(checkpoints(tmp_path)) >= 2, proc)
  proc.kill()
  proc.wait()
  # The checkpoint a resume takes is the last one the manager recorded in its state file: the
  # kill can land after a checkpoint's files exist but before it is recorded.
  state = (tmp_path / 'checkpoints' / 'checkpoint').read_text()
  last = int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state).group(1))
  assert last in checkpoints(tmp_path)
  proc = run(args[:-1] + ['700'])
  assert 'Resumed from' in proc.stdout
  resumed = [line for line in proc.stdout.splitlines() if line.startswith('Resumed from')][0]
  assert f'ckpt-{last} ' in resumed
  assert checkpoints(tmp_path)[-1] == 700
  # Each start is marked at its checkpoint's frame; the curve's readers drop what the killed
  # process logged past it.
  starts = [r for r in records(tmp_path) if r.get('started')]
  assert [r['step'] for r in starts] == [0, last] and starts[0]['evaluated'] is None
  assert starts[1]['evaluated'] == last  # Checkpoints are written after evaluations.


def test_sigint_saves_a_checkpoint_and_stops(tmp_path):
  args = ['--configs', 'debug', '--task', 'gym:CartPole-v1', '--logdir', str(tmp_path),
          '--eval_every', '100000', '--steps', '100000']
  proc = _start(args)
  _wait_for(lambda: len(checkpoints(tmp_path)) >= 1 and episodes(tmp_path), proc)
  time.sleep(3)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert 'SIGINT received' in out and 'rerun the same command to resume' in out
  assert len(checkpoints(tmp_path)) >= 2  # The one at eval, and the one on the signal.


def test_python_api_trains_on_a_user_built_env(tmp_path):
  import gymnasium as gym
  import dreamerv2_tf
  config = dreamerv2_tf.load_config(['debug'], [
      '--logdir', str(tmp_path), '--steps', '250', '--log_every', '50',
      '--actor_ent', 'linear(0.01,0,250)', '--eval_every', '1e9'])
  logdir = dreamerv2_tf.train(gym.make('CartPole-v1'), config)
  assert pathlib.Path(logdir) == tmp_path
  assert_run(tmp_path, 250)  # Stops at `steps` although evaluations are rarer than that.
  recs = records(tmp_path)
  # Schedules run on the agent's step counter: the entropy scale decays as configured.
  scales = [(r['step'], r['actor_ent_scale']) for r in recs if 'actor_ent_scale' in r]
  assert len(scales) >= 2 and scales[-1][1] < scales[0][1]
  for frames, value in scales:
    # Logged at the end of a period; the mean over its updates lies within the period's range.
    assert 0.01 * (1 - frames / 250) - 1e-6 <= value <= 0.01 * (1 - (frames - 60) / 250) + 1e-6
  saved = dreamerv2_tf.Config.load(tmp_path / 'config.yaml')
  assert saved.steps == 250 and saved.logdir == str(tmp_path)


@pytest.mark.parametrize('task,message', [
    ('pongg', "unknown task 'pongg'; did you mean pong?"),
    ('gym:NoSuchEnv-v0', "cannot make gymnasium env 'NoSuchEnv-v0'"),
])
def test_unknown_task_is_a_one_line_error_and_writes_nothing(tmp_path, task, message):
  logdir = tmp_path / 'run'
  proc = run(['--configs', 'debug', '--task', task, '--logdir', str(logdir)], check=False,
             flags=('-X', 'importtime'))
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and not logdir.exists()
  # Answered at once: before the ~10 s import of TensorFlow.
  assert not imports_tensorflow(proc.stderr)
