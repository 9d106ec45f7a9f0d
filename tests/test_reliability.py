"""A run never silently poisons itself: the parts, with injected faults (no training runs).

Non-finite env data at the replay, skipped non-finite updates in every precision, non-finite
metrics in every output, the logdir lock, checkpoints from finite weights only, failed writes.
Whole training runs with the same faults are in test_reliability_runs.py.
"""
import errno
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dreamerv2_tf import finite
from dreamerv2_tf.divergence import DivergenceError, SkipWatch
from dreamerv2_tf.files import WriteError
from dreamerv2_tf.replay import Replay
from dreamerv2_tf.run_lock import LogdirInUseError, RunLock


def transitions(length, nan_at=None, key='vector'):
  """One episode of `length` steps; `key` holds NaN at step `nan_at`."""
  for t in range(length):
    value = np.full(3, float(t), np.float32)
    if t == nan_at:
      value[1] = np.nan
    yield {key: value, 'reward': np.float32(1.0), 'is_first': t == 0,
           'is_last': t == length - 1, 'is_terminal': False}


def stored_values(directory):
  files = sorted(directory.glob('*.npz'))
  return files, [dict(np.load(f)) for f in files]


# --- Non-finite env data -------------------------------------------------------------------

def test_nonfinite_step_error_names_key_episode_and_step(tmp_path):
  replay = Replay(tmp_path, minlen=5, maxlen=5)
  for step in transitions(20):
    replay.add_step(step)
  steps = list(transitions(20, nan_at=7))
  for step in steps[:7]:
    replay.add_step(step, worker=2)
  with pytest.raises(finite.NonFiniteDataError) as info:
    replay.add_step(steps[7], worker=2)
  message = str(info.value)
  assert "key 'vector'" in message and 'at step 7 of episode' in message
  assert 'of env 2' in message and '--replay.nonfinite drop' in message
  assert '\n' not in message
  # Nothing of the bad episode is stored; the good one is intact and the worker may go on.
  files, data = stored_values(tmp_path)
  assert len(files) == 1 and all(np.isfinite(d['vector']).all() for d in data)
  for step in transitions(20):
    replay.add_step(step, worker=2)
  assert replay.stats['total_steps'] == 40


def test_nonfinite_step_drop_drops_the_episode_and_counts_it(tmp_path):
  replay = Replay(tmp_path, minlen=5, maxlen=5, nonfinite='drop')
  for step in transitions(20, nan_at=12):
    replay.add_step(step)
  for step in transitions(20):
    replay.add_step(step)
  assert replay.stats['dropped_episodes'] == 1
  assert replay.stats['total_steps'] == 20 and replay.stats['total_episodes'] == 1
  files, data = stored_values(tmp_path)
  assert len(files) == 1 and all(np.isfinite(d['vector']).all() for d in data)
  batch = replay.sample(16, 5)  # It never reaches a batch.
  assert np.isfinite(batch['vector']).all()


def test_nonfinite_reward_and_inf_are_caught_too(tmp_path):
  replay = Replay(tmp_path, minlen=5, maxlen=5, nonfinite='drop')
  episode = {k: np.stack([s[k] for s in transitions(10)]) for k in next(transitions(1))}
  episode['reward'][4] = np.inf
  replay.add_episode(episode)
  assert replay.stats['dropped_episodes'] == 1 and not list(tmp_path.glob('*.npz'))
  strict = Replay(tmp_path, minlen=5, maxlen=5)
  with pytest.raises(finite.NonFiniteDataError, match="inf in key 'reward' at step 4"):
    strict.add_episode(episode)


def test_replay_skips_a_stored_file_with_nan(tmp_path):
  # Files written before the check existed must not poison a resumed run.
  good = Replay(tmp_path, minlen=5, maxlen=5)
  for step in transitions(10):
    good.add_step(step)
  bad = {k: np.stack([s[k] for s in transitions(10)]) for k in next(transitions(1))}
  bad['vector'][3, 0] = np.nan
  np.savez_compressed(tmp_path / '20000101T000000000000-abc-0-10.npz', **bad)
  with pytest.warns(UserWarning, match='nan in key .vector. at step 3'):
    loaded = Replay(tmp_path, minlen=5, maxlen=5)
  assert loaded.stats['loaded_segments'] == 1 and loaded.stats['skipped_files'] == 1


def test_sanitize_keeps_the_policy_input_finite():
  obs = {'vector': np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32),
         'is_first': np.array([False, True])}
  out = finite.sanitize(obs)
  assert out['vector'].tolist() == [[1.0, 0.0], [0.0, 2.0]] and out['vector'].dtype == np.float32
  assert out['is_first'].tolist() == [False, True]


# --- Diverging updates ---------------------------------------------------------------------

@pytest.mark.parametrize('precision', ['32', 'bf16', '16'])
def test_nonfinite_loss_is_not_applied(precision):
  # A NaN reward makes the world model's loss NaN: its weights, Adam slots and step counter stay
  # as they were, the skip is in the metrics and counted; the next finite batch applies again.
  from dreamerv2_tf import load_config
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  config = load_config(['atari', 'debug'], ['--precision', precision])
  obs_space, act_space = make_spaces(image=(64, 64, 1))
  agent = Agent(config, obs_space, act_space)
  batch = make_batch(obs_space, act_space)
  agent.train(batch)  # Adam moments exist and are non-zero.
  wm = agent.wm
  watched = [*[v for m in wm.modules_ for v in m.variables], *wm.opt.opt.variables,
             agent.ac.rewnorm.mag]
  before = [np.array(v.numpy()) for v in watched]
  scale = float(wm.opt.scale.numpy()) if precision == '16' else None
  poisoned = dict(batch, reward=batch['reward'].copy())
  poisoned['reward'][1, 3] = np.nan
  metrics = agent.train(poisoned)
  assert math.isnan(metrics['model_loss']) and metrics['model_skipped_steps'] == 1.0
  changed = [v.name for v, old in zip(watched, before) if not np.array_equal(v.numpy(), old)]
  assert not changed, changed
  assert int(wm.opt.skipped.numpy()) >= 1
  if precision == '16':  # Loss scaling still halves its scale.
    assert float(wm.opt.scale.numpy()) == scale / 2
  metrics = agent.train(batch)
  assert metrics['model_skipped_steps'] == 0.0 and math.isfinite(metrics['model_loss'])
  assert not all(np.array_equal(v.numpy(), old) for v, old in zip(watched, before))


def test_skip_watch_stops_after_limit_in_a_row_naming_the_first_failing_loss():
  watch = SkipWatch(3, latest=lambda: 'logdir/checkpoints/ckpt-100')
  ok = {'model_loss': 1.0, 'model_skipped_steps': 0.0, 'actor_skipped_steps': 0.0}
  bad_actor = {'model_loss': 1.0, 'model_skipped_steps': 0.0, 'actor_loss': math.nan,
               'actor_skipped_steps': 1.0}
  bad_model = {'model_loss': math.inf, 'reward_loss': math.inf, 'model_skipped_steps': 1.0,
               'actor_skipped_steps': 0.0}
  watch(bad_model, 100)
  watch(bad_model, 200)
  watch(ok, 300)  # A finite update ends the row.
  watch(bad_actor, 400)
  watch(bad_model, 500)
  with pytest.raises(DivergenceError) as info:
    watch(bad_model, 600)
  message = str(info.value)
  assert '3 updates in a row' in message and 'the first at 400 frames in actor_loss' in message
  assert 'ckpt-100' in message and '\n' not in message
  never = SkipWatch(0)
  for _ in range(1000):
    never(bad_model, 0)


def test_checkpoint_is_never_written_from_nonfinite_weights(tmp_path):
  import tensorflow as tf
  from dreamerv2_tf.checkpoints import Checkpoints, NonFiniteWeightsError
  weight = tf.Variable([1.0, 2.0])
  checkpoints = Checkpoints({'w': weight}, tmp_path, [weight])
  first = checkpoints.save(10)
  assert checkpoints.save(10) is None  # The latest is never rewritten in place.
  weight.assign([1.0, np.nan])
  with pytest.raises(NonFiniteWeightsError, match='not writing checkpoint 20.*ckpt-10'):
    checkpoints.save(20)
  assert checkpoints.latest == first and not list(tmp_path.glob('ckpt-20*'))
  weight.assign([0.0, 0.0])
  checkpoints.restore(first)
  assert weight.numpy().tolist() == [1.0, 2.0]


def test_checkpoint_rewritten_at_its_step_only_when_asked_and_never_lost(tmp_path, monkeypatch):
  import tensorflow as tf
  from dreamerv2_tf.checkpoints import Checkpoints
  weight = tf.Variable([1.0])
  checkpoints = Checkpoints({'w': weight}, tmp_path, [weight])
  first, second = checkpoints.save(10), checkpoints.save(20)
  weight.assign([2.0])
  assert checkpoints.save(20) is None  # Without replace the latest is never rewritten.
  assert checkpoints.save(20, replace=True) == second
  assert tf.train.load_checkpoint(second).get_tensor('w/.ATTRIBUTES/VARIABLE_VALUE') == [2.0]
  assert checkpoints.latest == second
  files = sorted(p.name for p in tmp_path.iterdir())
  assert not [name for name in files if 'replaced' in name]  # The old files are gone.
  # A rewrite that fails (a full disk) leaves the old one as it was; one killed while it
  # writes leaves the checkpoint before it as the latest.
  weight.assign([3.0])
  def fail(*args, **kwargs):
    assert tf.train.latest_checkpoint(str(tmp_path)) == first
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(tf.train.CheckpointManager, 'save', fail)
  with pytest.raises(WriteError, match='ckpt-20'):
    checkpoints.save(20, replace=True)
  assert checkpoints.latest == second and sorted(p.name for p in tmp_path.iterdir()) == files
  assert tf.train.load_checkpoint(second).get_tensor('w/.ATTRIBUTES/VARIABLE_VALUE') == [2.0]
  # The checkpoints stay in the rotation: the 4th save deletes the oldest, ckpt-10.
  monkeypatch.undo()
  for number in (30, 40):
    checkpoints.save(number)
  assert sorted(p.name for p in tmp_path.glob('ckpt-*.index')) == [
      'ckpt-20.index', 'ckpt-30.index', 'ckpt-40.index']


def test_logger_discards_what_a_stopped_evaluation_logged(tmp_path):
  from dreamerv2_tf.logger import Logger
  logger = Logger(tmp_path, 2, tensorboard=False, stream=open(os.devnull, 'w'))
  logger.mean('eval_return', 5.0)
  logger.video('eval_policy_image', np.zeros((2, 4, 4, 3), np.uint8))
  logger.mean('train_return', 1.0)
  logger.discard('eval_')
  logger.write(10)
  logger.close()
  assert [json.loads(line) for line in (tmp_path / 'metrics.jsonl').open()] == [
      {'step': 20, 'train_return': 1.0}]


def test_checkpoint_of_an_older_version_restores_without_what_was_added(tmp_path):
  import tensorflow as tf
  from dreamerv2_tf.checkpoints import Checkpoints
  from dreamerv2_tf.periods import EvalSchedule
  weight = tf.Variable([1.0, 2.0])
  old = Checkpoints({'w': weight}, tmp_path / 'old', [weight]).save(10)  # No 'evaluated'.
  evals = EvalSchedule(100)
  new = Checkpoints({'w': weight, 'evaluated': evals.evaluated}, tmp_path / 'new', [weight],
                    added=['evaluated'])
  weight.assign([0.0, 0.0])
  assert new.restore(old) == ['evaluated']
  assert weight.numpy().tolist() == [1.0, 2.0] and int(evals.evaluated) == -1
  evals.done(7)
  path = new.save(20)
  evals.evaluated.assign(-1)
  assert new.restore(path) == [] and int(evals.evaluated) == 7
  # Only what was added may be missing: a checkpoint without a weight is still an error.
  other = tf.Variable([3.0])
  strict = Checkpoints({'w': weight, 'v': other}, tmp_path / 'strict', [weight])
  with pytest.raises(AssertionError):
    strict.restore(old)


def test_eval_schedule_of_an_older_checkpoint_is_read_from_the_metrics(tmp_path):
  from dreamerv2_tf.periods import EvalSchedule, logged_evaluations
  metrics = tmp_path / 'metrics.jsonl'
  rows = [{'step': 200, 'eval_return': 1.0}, {'step': 2000, 'train_return': 5.0},
          {'step': 4000, 'eval_return': None},  # An evaluation whose returns were not finite.
          {'step': 8000, 'eval_return': 3.0}]   # Logged after the checkpoint (a killed run).
  metrics.write_text('\n'.join(json.dumps(r) for r in rows) + '\n[1]\n{"step": 90')
  logged = logged_evaluations(metrics, 2)  # Agent steps: frames / action_repeat.
  assert logged == [100, 2000, 4000]
  evals = EvalSchedule(1000)
  assert evals.recover(logged, 3000) == 2000
  assert not evals.due(2999) and evals.due(3000) and evals.steps_to_next(2500) == 500
  fresh = EvalSchedule(1000)
  assert logged_evaluations(tmp_path / 'missing.jsonl', 2) == []
  assert fresh.recover([], 3000) is None and fresh.due(3000)
  assert fresh.steps_to_next(3000) == 0 and EvalSchedule(0).steps_to_next(5) is None


# --- Non-finite metrics --------------------------------------------------------------------

def test_nonfinite_metrics_are_logged_everywhere(tmp_path):
  import tensorflow as tf
  from dreamerv2_tf.logger import Logger
  lines = []
  stream = type('S', (), {'write': lambda self, s: lines.append(s), 'flush': lambda self: 0})()
  logger = Logger(tmp_path, 4, stream=stream)
  logger.scalar('model_loss', math.nan)
  logger.scalar('reward_loss', math.inf)
  logger.scalar('model_skipped_steps', 2)
  logger.write(25)
  logger.scalar('model_loss', 1.5)
  logger.write(50)
  logger.close()
  terminal = ''.join(lines)
  assert 'model_loss nan' in terminal and 'reward_loss inf' in terminal
  text = (tmp_path / 'metrics.jsonl').read_text()
  assert 'NaN' not in text and 'Infinity' not in text  # Strict JSON on every line.
  records = [json.loads(line) for line in text.splitlines()]
  assert records[0] == {'step': 100, 'model_loss': None, 'reward_loss': None,
                        'model_skipped_steps': 2.0}
  frame = pd.read_json(tmp_path / 'metrics.jsonl', lines=True)
  assert frame['model_loss'].dtype == np.float64
  assert math.isnan(frame['model_loss'][0]) and frame['model_loss'][1] == 1.5
  events = {}
  for path in tmp_path.glob('events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        events[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  assert math.isnan(events[('model_loss', 100)]) and events[('reward_loss', 100)] == math.inf


def test_failed_metrics_write_leaves_no_partial_line(tmp_path, monkeypatch):
  from dreamerv2_tf import logger as logger_lib
  logger = logger_lib.Logger(tmp_path, tensorboard=False, stream=open(os.devnull, 'w'))
  logger.scalar('a', 1.0)
  logger.write(1)
  real_write = os.write

  def full_disk(fd, data):  # Takes half the line, then the disk is full.
    if len(data) > 8:
      return real_write(fd, data[:len(data) // 2])
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(logger_lib.os, 'write', full_disk)
  logger.scalar('a', 2.0)
  with pytest.raises(WriteError) as info:
    logger.write(2)
  monkeypatch.undo()
  message = str(info.value)
  assert str(tmp_path / 'metrics.jsonl') in message and 'No space left on device' in message
  assert 'free space' in message and '\n' not in message
  assert (tmp_path / 'metrics.jsonl').read_text() == '{"step": 1, "a": 1.0}\n'
  logger.scalar('a', 3.0)  # After space is freed, writing goes on.
  logger.write(3)
  logger.close()
  assert list(pd.read_json(tmp_path / 'metrics.jsonl', lines=True)['a']) == [1.0, 3.0]


# --- One process per logdir ----------------------------------------------------------------

def test_second_lock_names_the_holder_and_release_frees_it(tmp_path):
  with RunLock(tmp_path):
    record = json.loads((tmp_path / 'run.lock').read_text())
    assert record['pid'] == os.getpid() and record['host'] and record['start']
    with pytest.raises(LogdirInUseError) as info:
      RunLock(tmp_path).acquire()
    message = str(info.value)
    assert f'in use by process {os.getpid()} on host {record["host"]}' in message
    assert '\n' not in message
    with RunLock(tmp_path / 'workers' / 'worker1'):  # One lock per worker's workdir.
      pass
  assert not (tmp_path / 'run.lock').exists()
  with RunLock(tmp_path) as lock:
    assert lock.took_over is None


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
  code = ('import sys, time; from dreamerv2_tf.run_lock import RunLock; '
          'RunLock(sys.argv[1]).acquire(); print("locked", flush=True); time.sleep(600)')
  child = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE,
                           text=True)
  try:
    assert child.stdout.readline().strip() == 'locked'
    with pytest.raises(LogdirInUseError, match=f'process {child.pid} '):
      RunLock(tmp_path).acquire()
    child.kill()  # SIGKILL: no cleanup runs, the file stays behind.
    child.wait()
    assert json.loads((tmp_path / 'run.lock').read_text())['pid'] == child.pid
    with RunLock(tmp_path) as lock:
      assert lock.took_over['pid'] == child.pid
      assert json.loads((tmp_path / 'run.lock').read_text())['pid'] == os.getpid()
  finally:
    child.kill()
    child.wait()


def test_prepare_logdir_locks_before_writing_config(tmp_path):
  from dreamerv2_tf import load_config
  from dreamerv2_tf.loop import prepare_logdir
  config = load_config(['debug'], ['--logdir', str(tmp_path / 'run'), '--task', 'gym:CartPole-v1'])
  cleanup = []
  prepare_logdir(config, cleanup=cleanup)
  saved = (tmp_path / 'run' / 'config.yaml').read_text()
  other = config.update({'steps': 5})  # A second start with another (allowed) setting.
  with pytest.raises(LogdirInUseError):
    prepare_logdir(other)
  assert (tmp_path / 'run' / 'config.yaml').read_text() == saved
  worker_cleanup = []  # A second worker locks its own workdir.
  prepare_logdir(config, chief=False, worker=1, cleanup=worker_cleanup)
  assert (tmp_path / 'run' / 'workers' / 'worker1' / 'run.lock').exists()
  for fn in cleanup + worker_cleanup:
    fn()
  assert not list((tmp_path / 'run').rglob('run.lock'))


# --- Failed writes -------------------------------------------------------------------------

def test_failed_episode_write_is_one_line_naming_the_file(tmp_path, monkeypatch):
  replay = Replay(tmp_path, minlen=5, maxlen=5)
  for step in transitions(10):
    replay.add_step(step)

  def full_disk(file, **arrays):
    file.write(b'PK half')
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(np, 'savez_compressed', full_disk)
  steps = list(transitions(10))
  for step in steps[:-1]:
    replay.add_step(step)
  with pytest.raises(WriteError) as info:
    replay.add_step(steps[-1])
  monkeypatch.undo()
  message = str(info.value)
  assert f'could not write the episode {tmp_path}' in message and message.count('\n') == 0
  assert 'No space left on device' in message and 'rerun the same command' in message
  assert len(list(tmp_path.iterdir())) == 1  # The stored episode; no temporary file.
  replay.add_step(steps[-1])  # With space again, the same step goes in.
  assert len(list(tmp_path.glob('*.npz'))) == 2


FSIZE_CHILD = '''
import pathlib, resource, signal, sys
import numpy as np
import tensorflow as tf
from dreamerv2_tf.checkpoints import Checkpoints
from dreamerv2_tf.files import WriteError
from dreamerv2_tf.replay import Replay
folder = pathlib.Path(sys.argv[1])
weight = tf.Variable(tf.ones([50_000]))  # 200 kB.
checkpoints = Checkpoints({'w': weight}, folder / 'checkpoints', [weight])
checkpoints.save(1)
replay = Replay(folder / 'episodes', minlen=5, maxlen=5)
episode = {'image': np.zeros((10, 8, 8, 1), np.uint8), 'reward': np.zeros(10, np.float32),
           'is_first': np.arange(10) == 0, 'is_last': np.arange(10) == 9}
replay.add_episode(episode)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Writes past the limit fail with EFBIG.
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
weight.assign(tf.fill([50_000], 2.0))
for write in (lambda: checkpoints.save(2),
              lambda: replay.add_episode(dict(episode, image=np.random.default_rng(0).integers(
                  0, 255, (1000, 8, 8, 1), np.uint8), reward=np.zeros(1000, np.float32),
                  is_first=np.arange(1000) == 0, is_last=np.arange(1000) == 999))):
  try:
    write()
  except WriteError as e:
    print(e)
'''


def test_writes_past_the_file_size_limit_fail_whole(tmp_path):
  # A child process under RLIMIT_FSIZE: large writes fail at the OS level, as on a full disk
  # (where tmpfs cannot be mounted, this is the OS-level check of the same paths).
  proc = subprocess.run([sys.executable, '-c', FSIZE_CHILD, str(tmp_path)], capture_output=True,
                        text=True, timeout=300, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert proc.returncode == 0, proc.stderr[-2000:]
  checkpoint, episode = proc.stdout.strip().splitlines()
  assert checkpoint.startswith(f'could not write the checkpoint {tmp_path}/checkpoints/ckpt-2: '
                               'File too large; ')
  assert episode.startswith(f'could not write the episode {tmp_path}/episodes/')
  assert 'File too large' in episode and 'ulimit -f' in episode
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == [
      'checkpoint', 'ckpt-1.data-00000-of-00001', 'ckpt-1.index']
  import tensorflow as tf
  reader = tf.train.load_checkpoint(str(tmp_path / 'checkpoints' / 'ckpt-1'))
  (name,) = [n for n in reader.get_variable_to_shape_map() if n.startswith('w/')]
  assert (reader.get_tensor(name) == 1.0).all()
  assert len(list((tmp_path / 'episodes').iterdir())) == 1  # The first episode, no temp file.
  assert Replay(tmp_path / 'episodes', minlen=5, maxlen=5).stats['loaded_steps'] == 10
