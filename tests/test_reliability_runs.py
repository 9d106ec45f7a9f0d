"""Whole training runs (debug preset) with injected faults; each checks nothing good is lost.

A NaN from the env in both `replay.nonfinite` modes, a loss that overflows until the run stops,
a full disk during an episode write and during a checkpoint (small tmpfs mounts; needs root),
and two starts on one logdir (the second fails, a SIGKILLed first's lock is taken over).
"""
import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.checkpoints import NonFiniteWeightsError  # noqa: F401  (documented error)
from dreamerv2_tf.divergence import DivergenceError
from dreamerv2_tf.files import WriteError
from dreamerv2_tf.finite import NonFiniteDataError
from dreamerv2_tf.loop import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Short and cheap: 100-step episodes (debug time_limit), few updates.
FAST = ['--prefill', '100', '--train_every', '25', '--log_every', '50', '--eval_every', '200',
        '--eval_eps', '1']


class Probe(gym.Env):
  """Random vector observations; from global step `nan_at` on one holds NaN, from `huge_from`
  on the reward is 3e38 (finite, but its squared error overflows float32)."""

  def __init__(self, size=8, nan_at=None, huge_from=None, seed=0):
    self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
    self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    self.nan_at, self.huge_from, self.t = nan_at, huge_from, 0
    self.rng = np.random.default_rng(seed)

  def _obs(self):
    obs = self.rng.normal(size=self.observation_space.shape).astype(np.float32)
    if self.t == self.nan_at:
      obs[1] = np.nan
    return obs

  def reset(self, seed=None, options=None):
    return self._obs(), {}

  def step(self, action):
    self.t += 1
    huge = self.huge_from is not None and self.t >= self.huge_from
    return self._obs(), 3e38 if huge else float(action[0]), False, False, {}


def run(logdir, steps, env=None, args=(), eval_env=None):
  config = load_config(['debug'], ['--task', 'gym:probe', '--logdir', str(logdir), '--steps',
                                   str(steps), *FAST, *args])
  return train(env or Probe(), config, eval_env or Probe(seed=1))


def stored(logdir):
  """Every array of every stored episode, train and eval."""
  return [dict(np.load(f)) for f in sorted(pathlib.Path(logdir).rglob('*_episodes/*.npz'))]


def checkpoint_values(path):
  import tensorflow as tf
  reader = tf.train.load_checkpoint(str(path))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def all_finite(arrays):
  return all(np.isfinite(v).all() for v in arrays if np.asarray(v).dtype.kind == 'f')


@pytest.mark.parametrize('mode', ['error', 'drop'])
def test_env_returning_nan(tmp_path, mode):
  args = ['--replay.nonfinite', mode]
  if mode == 'error':
    # NaN in the observation of the 150th env step: the 2nd episode's step 50.
    with pytest.raises(NonFiniteDataError) as info:
      run(tmp_path, 300, Probe(nan_at=150), args)
    message = str(info.value)
    assert re.search(r"nan in key 'vector' at step 50 of episode \w+ of env 0", message)
    assert '--replay.nonfinite drop' in message and '\n' not in message
    assert not (tmp_path / 'run.lock').exists()  # Released on the way out.
    assert len(list((tmp_path / 'train_episodes').glob('*.npz'))) == 1
  else:
    # NaN at the 250th env step, the 3rd episode's step 50, while the agent acts: the policy
    # must go on acting (a NaN action would stop the env) and the episode is dropped.
    run(tmp_path, 300, Probe(nan_at=250), args)
    metrics = pd.read_json(tmp_path / 'metrics.jsonl', lines=True)
    assert metrics['train_dropped_episodes'].max() == 1
    assert np.isfinite(metrics['train_return'].dropna()).all()
    assert np.isfinite(metrics['model_loss'].dropna()).all()
    assert (tmp_path / 'checkpoints' / 'ckpt-300.index').exists()
    train_files = list((tmp_path / 'train_episodes').glob('*.npz'))
    assert len(train_files) == 2  # Episodes 1 and 2; the 3rd is dropped.
  episodes = stored(tmp_path)
  assert episodes and all(all_finite(ep.values()) for ep in episodes)


@pytest.mark.parametrize('precision', ['32', 'bf16'])
def test_diverging_loss_stops_the_run_and_keeps_finite_checkpoints(tmp_path, precision):
  # Rewards of 3e38 from the start (clip_rewards identity): every world-model update has an
  # infinite loss and is skipped; the 5th in a row stops the run.
  args = ['--clip_rewards', 'identity', '--skip_limit', '5', '--train_every', '10',
          '--log_every', '20', '--precision', precision]
  with pytest.raises(DivergenceError) as info:
    run(tmp_path, 1000, Probe(huge_from=0), args)
  message = str(info.value)
  assert '5 updates in a row skipped' in message and 'in model_loss' in message
  assert f'the last good checkpoint is {tmp_path / "checkpoints" / "ckpt-100"}' in message
  assert '\n' not in message
  checkpoints = sorted((tmp_path / 'checkpoints').glob('ckpt-*.index'))
  assert [p.name for p in checkpoints] == ['ckpt-100.index']
  assert all_finite(checkpoint_values(tmp_path / 'checkpoints' / 'ckpt-100').values())
  metrics = pd.read_json(tmp_path / 'metrics.jsonl', lines=True)  # Readable, NaN not dropped.
  logged = metrics.dropna(subset=['model_skipped_steps'])
  assert logged['model_skipped_steps'].sum() >= 2 and logged['model_loss'].isna().all()


# --- A stop during an evaluation ----------------------------------------------------------

class Stopping(Probe):
  """Sends this process SIGTERM at its `stop_at`-th step, as a machine going away would."""

  def __init__(self, stop_at, **kwargs):
    super().__init__(**kwargs)
    self.stop_at = stop_at

  def step(self, action):
    result = super().step(action)
    if self.t == self.stop_at:
      os.kill(os.getpid(), signal.SIGTERM)
    return result


def test_stop_during_an_evaluation_leaves_no_point_and_redoes_it_once(tmp_path):
  # Evaluations of 2 episodes of 100 steps at steps 100, 300, 500. SIGTERM comes in the 2nd
  # episode of the evaluation at 300 (the eval env's step 350): the finished episode's return
  # is not logged (it would be a point of the curve, a mean of 1 episode), and ckpt-300 keeps
  # the last finished evaluation (100). The resume evaluates at 300, then rewrites ckpt-300
  # with it, so a later resume from ckpt-300 does not evaluate at 300 a third time.
  args = ['--eval_eps', '2']
  checkpoints = tmp_path / 'checkpoints'
  evaluated = 'evaluated/.ATTRIBUTES/VARIABLE_VALUE'
  run(tmp_path, 600, args=args, eval_env=Stopping(350, seed=1))
  evals = [r['step'] for r in map(json.loads, (tmp_path / 'metrics.jsonl').open())
           if 'eval_return' in r]
  assert evals == [100]
  assert checkpoint_values(checkpoints / 'ckpt-300')[evaluated] == 100
  run(tmp_path, 600, args=args)
  evals = [r['step'] for r in map(json.loads, (tmp_path / 'metrics.jsonl').open())
           if 'eval_return' in r]
  assert evals == [100, 300, 500]
  assert checkpoint_values(checkpoints / 'ckpt-300')[evaluated] == 300
  state = (checkpoints / 'checkpoint').read_text()
  assert 'model_checkpoint_path: "ckpt-600"' in state


def agent_steps(directory):
  """Agent steps stored in an episode folder (an episode's first entry is no step)."""
  return sum(int((~np.load(f)['is_first']).sum()) for f in directory.glob('*.npz'))


def test_stop_mid_episode_stores_its_steps(tmp_path, capsys):
  # 100-step episodes; the prefill is the first. SIGTERM at the train env's step 250, halfway
  # through the third: its 50 steps are stored, so the checkpoint's step counts exactly the
  # stored steps and the resumed run trains on all it collected.
  episodes = tmp_path / 'train_episodes'
  run(tmp_path, 400, env=Stopping(250))
  assert '(running episodes: 51 steps stored)' in capsys.readouterr().out
  values = checkpoint_values(tmp_path / 'checkpoints' / 'ckpt-250')
  assert values['step/.ATTRIBUTES/VARIABLE_VALUE'] == 250 == agent_steps(episodes)
  cut = [f for f in episodes.glob('*.npz') if not np.load(f)['is_last'].any()]
  assert len(cut) == 1 and len(np.load(cut[0])['is_first']) == 51
  run(tmp_path, 400)
  assert agent_steps(episodes) == 400


def test_checkpoints_between_evaluations_every_checkpoint_minutes(tmp_path):
  # Updates at steps 101, 126, ..., 276 (every 25 after the 100-step prefill); evaluations
  # (and their checkpoints) at 100, 200 and 300. With checkpoint_minutes near 0 every update
  # also saves, so a kill loses no more than that; the newest 3 are kept. Without it the newest
  # 3 are 100, 200 and 300.
  run(tmp_path, 300, args=['--checkpoint_minutes', '1e-9'])
  state = (tmp_path / 'checkpoints' / 'checkpoint').read_text()
  assert re.findall(r'all_model_checkpoint_paths: "ckpt-(\d+)"', state) == ['251', '276', '300']
  with pytest.raises(ValueError, match="'checkpoint_minutes' must be >= 0, got -1"):
    run(tmp_path, 300, args=['--checkpoint_minutes', '-1'])


def test_stop_during_the_first_evaluation_keeps_one_random_episode(tmp_path):
  # The eval env plays the random-policy episode (its steps 1-100), then the first evaluation
  # at 100; SIGTERM at its step 150. The checkpoint records no finished evaluation, so the
  # restart plays the random episode again: the curve holds it once, as the paper's first bin.
  from dreamerv2_tf import compare
  args = ['--eval_eps', '2']
  run(tmp_path, 300, args=args, eval_env=Stopping(150, seed=1))
  run(tmp_path, 300, args=args)
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').open()]
  assert [r['step'] for r in rows if 'eval_random_return' in r] == [100, 100]
  assert [r['step'] for r in rows if 'eval_return' in r] == [100]
  curve, = compare.find_runs([tmp_path])
  assert curve.steps.tolist() == [100, 100]  # The second random episode and the evaluation.


# --- Disk full -----------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size):
  path.mkdir(parents=True, exist_ok=True)
  proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f'cannot mount a tmpfs here (needs root): {proc.stderr.strip()}')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


def fill(path, keep):
  """Fills the filesystem of `path` until `keep` bytes are free; returns the filler file."""
  stat = os.statvfs(path)
  filler = path / 'filler'
  with open(filler, 'wb') as f:
    f.write(b'\0' * max(stat.f_bavail * stat.f_frsize - keep, 0))
  return filler


def test_full_disk_during_episode_and_checkpoint_writes(tmp_path, capsys):
  logdir = tmp_path / 'run'
  with tmpfs(logdir / 'train_episodes', '8m') as episodes, \
       tmpfs(logdir / 'checkpoints', '8m') as checkpoints:
    # 1: a good run with checkpoints 100, 200 and two stored episodes.
    run(logdir, 200)
    before = {p.name: p.read_bytes() for p in episodes.glob('*.npz')}
    good = checkpoint_values(checkpoints / 'ckpt-200')
    assert len(before) == 2 and all_finite(good.values())
    episode_size = max(len(b) for b in before.values())
    checkpoint_size = sum(p.stat().st_size for p in checkpoints.glob('ckpt-200*'))
    # 2: the episodes' disk is full: the episode ending at step 300 cannot be written.
    filler = fill(episodes, episode_size // 2)
    with pytest.raises(WriteError) as info:
      run(logdir, 400)
    message = str(info.value)
    assert re.search(rf'could not write the episode {episodes}/\S+\.npz: No space left on '
                     r'device; .* rerun the same command to resume$', message)
    filler.unlink()
    assert {p.name: p.read_bytes() for p in episodes.glob('*.npz')} == before
    assert not [p for p in episodes.iterdir() if p.suffix != '.npz']  # No temporary file.
    # 3: the checkpoints' disk is full: the save after the evaluation at step 300 fails, the
    # earlier ones stay.
    filler = fill(checkpoints, checkpoint_size // 2)
    capsys.readouterr()
    with pytest.raises(WriteError) as info:
      run(logdir, 400)
    message = str(info.value)
    assert message.startswith(f'could not write the checkpoint {checkpoints / "ckpt-300"}: '
                              'No space left on device; ')
    assert '\n' not in message and 'Resumed from' in capsys.readouterr().out
    filler.unlink()
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        'checkpoint', 'ckpt-100.data-00000-of-00001', 'ckpt-100.index',
        'ckpt-200.data-00000-of-00001', 'ckpt-200.index']  # No partial ckpt-300 files.
    restored = checkpoint_values(checkpoints / 'ckpt-200')
    assert all(np.array_equal(restored[k], good[k]) for k in good)
    assert len(list(episodes.glob('*.npz'))) == 3  # The episode ending at step 300 was stored.
    # 4: with space again the same command resumes from ckpt-200 and finishes.
    run(logdir, 400)
    out = capsys.readouterr().out
    assert f'Resumed from {checkpoints / "ckpt-200"}' in out and 'replay holds 303 steps' in out
    assert (checkpoints / 'ckpt-400.index').exists()
    assert all_finite(checkpoint_values(checkpoints / 'ckpt-400').values())
    pd.read_json(logdir / 'metrics.jsonl', lines=True)  # Still readable.


# --- Two processes on one logdir -----------------------------------------------------------

def start(logdir, steps):
  command = [sys.executable, str(ROOT / 'scripts' / 'train.py'), '--configs', 'debug', '--task',
             'gym:Pendulum-v1', '--logdir', str(logdir), '--steps', str(steps), *FAST]
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'CUDA_VISIBLE_DEVICES': ''}
  # stderr to a file: a pipe nobody reads could fill up and stall the process.
  err = open(pathlib.Path(logdir).parent / f'stderr-{time.time_ns()}.txt', 'w+')
  proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                          text=True)
  proc.err = err
  return proc


def stderr_of(proc):
  proc.err.seek(0)
  return proc.err.read()


def wait_for(proc, pattern, timeout=300):
  """Reads `proc`'s stdout until a line matches `pattern`; returns the match."""
  deadline = time.time() + timeout
  lines = []
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      raise AssertionError(f'process ended before {pattern!r}:\n' + ''.join(lines[-20:])
                           + stderr_of(proc)[-2000:])
    lines.append(line)
    if match := re.search(pattern, line):
      return match
  raise AssertionError(f'no {pattern!r} within {timeout} s')


def test_two_starts_on_one_logdir(tmp_path):
  first = start(tmp_path, 100_000)
  try:
    saved = int(wait_for(first, r'Saved checkpoint .*ckpt-(\d+)').group(1))
    second = start(tmp_path, 100_000)
    second.communicate(timeout=300)
    err = stderr_of(second)
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert second.returncode == 1 and len(lines) == 1, err[-2000:]
    assert re.fullmatch(rf'error: logdir {re.escape(repr(str(tmp_path)))} is in use by process '
                        rf'{first.pid} on host \S+ \(started .*\); stop that run first, or use '
                        r'another --logdir', lines[0])
    wait_for(first, r'\[\d[\d,]* frames\]')  # The first goes on undisturbed.
    assert first.poll() is None
    assert json.loads((tmp_path / 'run.lock').read_text())['pid'] == first.pid
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / 'run.lock').exists()  # Stale: its process is gone.
    last = max(int(p.name[5:-6]) for p in (tmp_path / 'checkpoints').glob('ckpt-*.index'))
    assert last >= saved
    third = start(tmp_path, last + 50)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, stderr_of(third)[-2000:]
    assert f'Took over the lock of process {first.pid}' in out
    assert f'Resumed from {tmp_path / "checkpoints" / f"ckpt-{last}"}' in out
    assert (tmp_path / 'checkpoints' / f'ckpt-{last + 50}.index').exists()
    assert not (tmp_path / 'run.lock').exists()
  finally:
    first.kill()
    first.wait()
