"""Tests of the replay buffer: files, restart, corruption, eviction, chunking and sampling."""
import os
from pathlib import Path

import numpy as np
import pytest

from dreamerv2_tf import episode_files
from dreamerv2_tf import replay as replay_lib
from dreamerv2_tf.replay import Replay, bytes_per_step
from dreamerv2_tf.synthetic import make_spaces


def transitions(length, start=0, image=False, last=True):
  """Steps of one episode; the reward encodes the global step index `start + t`."""
  for t in range(length):
    step = {
        'vector': np.full(2, start + t, np.float32),
        'reward': np.float32(start + t),
        'is_first': t == 0, 'is_last': last and t == length - 1,
        'is_terminal': last and t == length - 1,
        'action': np.eye(3, dtype=np.float32)[t % 3] * (t > 0),
        'log_info': np.int32(t)}
    if image:
      step['image'] = np.full((8, 8, 1), t % 256, np.uint8)
    yield step


def episode(length, start=0, image=False):
  steps = list(transitions(length, start, image))
  return {key: np.stack([step[key] for step in steps]) for key in steps[0]}


def files(directory):
  return sorted(Path(directory).glob('*.npz'))


def runs(is_first):
  """Lengths of the runs that start at each is_first flag (the last one may be cut)."""
  starts = list(np.flatnonzero(is_first)) + [len(is_first)]
  return [b - a for a, b in zip(starts[:-1], starts[1:])]


def check_contiguous(batch):
  """Within a sequence the reward (= step index) increases by one per step."""
  reward, first = batch['reward'], batch['is_first']
  assert first[:, 0].all()
  jumps = np.diff(reward, axis=1) != 1
  assert not (jumps & ~first[:, 1:]).any(), 'non-contiguous data inside a sequence'
  np.testing.assert_array_equal(batch['vector'][..., 0], reward)


def one_line_error(error, call, *args, **kwargs):
  with pytest.raises(error) as info:
    call(*args, **kwargs)
  assert '\n' not in str(info.value)
  return str(info.value)


# Files and restarts.

def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
  replay = Replay(tmp_path, minlen=5, maxlen=5)
  replay.add_episode(episode(20))
  (good,) = files(tmp_path)
  content = good.read_bytes()

  def broken_savez(file, **arrays):
    file.write(b'PK\x03\x04 half an archive')
    assert files(tmp_path) == [good], 'the file being written must not have a final name'
    raise OSError('disk full')

  monkeypatch.setattr(np, 'savez_compressed', broken_savez)
  with pytest.raises(OSError, match='disk full'):
    replay.add_episode(episode(20, start=100))
  monkeypatch.undo()
  monkeypatch.setattr(os, 'replace', lambda *args: (_ for _ in ()).throw(OSError('crash')))
  for step in transitions(20, start=200):  # The failure happens at is_last.
    if step['is_last']:
      with pytest.raises(OSError, match='crash'):
        replay.add_step(step)
    else:
      replay.add_step(step)
  monkeypatch.undo()
  assert files(tmp_path) == [good] and good.read_bytes() == content
  assert list(tmp_path.iterdir()) == [good], 'temporary files must be cleaned up'
  assert replay.stats['loaded_segments'] == 1
  # The failed step was not added, so retrying it completes the episode.
  replay.add_step(step)
  assert len(files(tmp_path)) == 2 and replay.stats['total_steps'] == 40
  assert replay.stats['loaded_steps'] == 40, 'the failed step must not be stored twice'
  assert Replay(tmp_path, minlen=5, maxlen=5).stats['skipped_files'] == 0


def test_restart_reloads_same_stats_and_samples(tmp_path):
  kwargs = dict(capacity=250, minlen=5, maxlen=20, seed=3)
  first = Replay(tmp_path, **kwargs)
  for i in range(5):
    first.add_episode(episode(60 + 10 * i, start=1000 * i))
  for step in transitions(30, start=9000):
    first.add_step(step)
  second = Replay(tmp_path, **kwargs)
  assert second.stats == first.stats
  assert first.stats['total_steps'] == 430 and first.stats['total_episodes'] == 6
  a, b = first.sample(4, 30), second.sample(4, 30)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_flush_keeps_the_running_episodes_for_a_restart(tmp_path):
  # A run that stops mid-episode: worker 0 has 1,030 steps (one 1,000-step chunk written,
  # 30 pending), worker 1 has 3 (shorter than minlen: kept, never sampled).
  replay = Replay(tmp_path, minlen=5, maxlen=5, chunk=1000)
  for step in transitions(1030, last=False):
    replay.add_step(step, worker=0)
  for step in transitions(3, start=5000, last=False):
    replay.add_step(step, worker=1)
  assert len(files(tmp_path)) == 1
  assert replay.flush() == 33 and replay.flush() == 0
  assert len(files(tmp_path)) == 3
  restarted = Replay(tmp_path, minlen=5, maxlen=5, seed=1)
  assert restarted.stats['total_steps'] == replay.stats['total_steps'] == 1033
  assert restarted.stats['total_episodes'] == 2
  # The cut episode is one run: sequences cross the chunk boundary.
  rewards = restarted.sample(2000, 5)['reward']
  assert ((rewards[:, 0] > 995) & (rewards[:, 0] < 1000)).any() and rewards.max() == 1029
  assert not ((rewards >= 5000).any())
  # The flushed episodes have ended: each worker starts its next one with is_first.
  with pytest.raises(ValueError, match='is_first=False'):
    replay.add_step(next(transitions(2, start=1, last=False)) | {'is_first': False}, worker=0)
  for step in transitions(10, start=7000):
    replay.add_step(step, worker=1)
  assert replay.stats['total_episodes'] == 3


def test_corrupt_files_are_skipped_with_a_warning(tmp_path):
  replay = Replay(tmp_path, minlen=5, maxlen=5)
  for i in range(3):
    replay.add_episode(episode(20, start=100 * i))
  paths = files(tmp_path)
  paths[1].write_bytes(paths[1].read_bytes()[:len(paths[1].read_bytes()) // 2])
  (tmp_path / '20000101T000000000000-garbage-0-20.npz').write_bytes(b'not a zip file')
  (tmp_path / f'.{paths[0].name}.1234.tmp').write_bytes(b'left by a crash')
  with pytest.warns(UserWarning) as record:
    restarted = Replay(tmp_path, minlen=5, maxlen=5)
  messages = [str(w.message) for w in record if 'skipping' in str(w.message)]
  assert len(messages) == 2 and all('\n' not in m for m in messages)
  assert any(paths[1].name in m for m in messages) and any('garbage' in m for m in messages)
  stats = restarted.stats
  assert stats['skipped_files'] == 2 and stats['loaded_steps'] == 40
  rewards = restarted.sample(16, 5)['reward']
  assert set(np.unique(rewards // 100).astype(int)) <= {0, 2}


def test_fifo_eviction_keeps_the_newest_steps(tmp_path):
  replay = Replay(tmp_path, capacity=250, minlen=5, maxlen=10)
  for i in range(5):
    replay.add_episode(episode(100, start=1000 * i))
  stats = replay.stats
  assert stats['loaded_steps'] == 200 and stats['loaded_episodes'] == 2
  assert stats['total_steps'] == 500 and len(files(tmp_path)) == 5, 'files stay on disk'
  rewards = replay.sample(64, 10)['reward']
  assert set(np.unique(rewards // 1000).astype(int)) == {3, 4}


# Chunking of long episodes.

def test_long_episode_is_chunked_and_sampleable_before_it_ends(tmp_path):
  replay = Replay(tmp_path, minlen=10, maxlen=20, chunk=1000)
  for step in transitions(2500, last=False):
    replay.add_step(step)
  lengths = [episode_files.parse(p.name)[2:] for p in files(tmp_path)]
  assert sorted(lengths) == [(0, 1000), (1, 1000)]
  assert replay.stats['loaded_steps'] == 2000
  chunk = replay.sample(32, 20)
  check_contiguous(chunk)
  assert chunk['reward'].max() < 2000, 'unsaved tail sampled although ongoing=False'
  # A restart after a crash keeps the saved chunks.
  assert Replay(tmp_path, minlen=10, maxlen=20).stats['loaded_steps'] == 2000
  # The end piece keeps at least minlen steps: 2515 steps -> 1000 + 1000 + 515.
  for step in transitions(15, start=2500):
    step['is_first'] = False
    replay.add_step(step)
  assert sorted(episode_files.parse(p.name).length for p in files(tmp_path)) == [515, 1000, 1000]
  assert replay.stats['total_episodes'] == 1 and replay.stats['total_steps'] == 2515


def test_end_piece_is_never_shorter_than_minlen(tmp_path):
  replay = Replay(tmp_path, minlen=10, maxlen=10, chunk=100)
  replay.add_episode(episode(105))
  replay.add_episode(episode(115))
  lengths = sorted(episode_files.parse(p.name).length for p in files(tmp_path))
  assert lengths == [15, 100, 105]


def test_ongoing_tail_is_sampleable_once_it_has_minlen_steps(tmp_path):
  replay = Replay(tmp_path, ongoing=True, minlen=10, maxlen=10)
  steps = transitions(30, start=500, last=False)
  for _ in range(9):
    replay.add_step(next(steps))
  one_line_error(RuntimeError, replay.sample, 1, 10)
  replay.add_step(next(steps))
  batch = replay.sample(4, 10)
  check_contiguous(batch)
  assert (batch['reward'] >= 500).all() and 'log_info' not in batch
  assert not files(tmp_path)


# Sampling.

@pytest.mark.parametrize('minlen, maxlen, expected', [(5, 20, range(16, 21)), (5, 5, [5])])
def test_sequences_start_with_is_first_and_are_contiguous(tmp_path, minlen, maxlen, expected):
  replay = Replay(tmp_path, minlen=minlen, maxlen=maxlen, seed=1)
  replay.add_episode(episode(100))
  lengths = []
  for _ in range(20):
    batch = replay.sample(1, 100)  # A fresh sampler per call: the first run is whole.
    check_contiguous(batch)
    lengths += runs(batch['is_first'][0])[:-1]
  # min(total, maxlen) minus a random integer in [0, minlen), but at least minlen.
  assert set(lengths) == set(expected), sorted(set(lengths))


def test_prioritize_ends_samples_the_final_steps_more_often(tmp_path):
  counts = {}
  for prioritize in (True, False):
    directory = tmp_path / str(prioritize)
    replay = Replay(directory, minlen=20, maxlen=20, prioritize_ends=prioritize, seed=0)
    replay.add_episode(episode(300))
    rewards = replay.sample(200, 20)['reward']
    counts[prioritize] = int((rewards == 299).sum())
  # Uniform starts include the last step with p = 1/281, prioritized ones with 21/301.
  assert counts[False] <= 5 and counts[True] >= 7, counts
  assert counts[True] >= 3 * max(counts[False], 1), counts


def test_dataset_batches_have_shapes_dtypes_and_resets(tmp_path):
  import tensorflow as tf
  replay = Replay(tmp_path, minlen=4, maxlen=8, seed=2)
  for i in range(3):
    replay.add_episode(episode(12, start=100 * i, image=True))
  dataset = replay.dataset(batch=3, length=10)
  for batch in dataset.take(2):
    assert set(batch) == {'image', 'vector', 'reward', 'is_first', 'is_last', 'is_terminal',
                          'action'}
    assert batch['image'].shape == (3, 10, 8, 8, 1) and batch['image'].dtype == tf.uint8
    assert batch['vector'].dtype == tf.float32 and batch['reward'].shape == (3, 10)
    assert batch['is_first'].dtype == tf.bool and batch['action'].shape == (3, 10, 3)
    batch = {key: value.numpy() for key, value in batch.items()}
    check_contiguous(batch)  # Every jump in the data is marked by is_first.
    assert (batch['is_first'].sum(1) >= 2).all(), 'sequences of <= 8 steps must be joined'


def test_sample_shapes_and_no_log_keys(tmp_path):
  replay = Replay(tmp_path, minlen=5, maxlen=5)
  replay.add_episode(episode(30, image=True))
  batch = replay.sample(2, 7)
  assert not any(key.startswith('log_') for key in batch)
  assert batch['image'].shape == (2, 7, 8, 8, 1) and batch['image'].dtype == np.uint8
  assert batch['reward'].dtype == np.float32 and batch['action'].dtype == np.float32
  with np.load(files(tmp_path)[0]) as data:
    assert 'log_info' in data.files, 'log keys are kept on disk'


def test_batches_are_drawn_when_asked_for(tmp_path):
  # The deterministic loop's batches: the same seed and contents give the same batches, and a
  # batch asked for after an episode was added can hold it (none is sampled ahead of time,
  # as tf.data's background prefetch does).
  draws = []
  for name in ('a', 'b'):
    replay = Replay(tmp_path / name, minlen=5, maxlen=5, seed=7)
    replay.add_episode(episode(30))
    batches = replay.batches(8, 5)
    before = next(batches)
    replay.add_episode(episode(30, start=1000))
    after = next(batches)
    draws.append((before, after))
    check_contiguous(before), check_contiguous(after)
    assert before['reward'].max() < 1000 <= after['reward'].max()
  for x, y in zip(*draws):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# Errors.

def test_empty_replay_raises_a_clear_error(tmp_path):
  replay = Replay(tmp_path, minlen=10, maxlen=10)
  assert 'minlen=10' in one_line_error(RuntimeError, replay.sample, 2, 10)
  assert not replay.can_sample
  replay.add_episode(episode(5))  # Shorter than minlen: stored but never sampled.
  assert replay.stats['loaded_steps'] and not replay.can_sample
  one_line_error(RuntimeError, replay.sample, 2, 10)
  one_line_error(RuntimeError, replay.dataset, 2, 10)
  replay.add_episode(episode(12))
  assert replay.can_sample and replay.sample(2, 10)['is_first'].shape == (2, 10)


def test_bad_input_raises_one_line_value_errors(tmp_path):
  assert '-1' in one_line_error(ValueError, Replay, tmp_path, capacity=-1)
  assert 'maxlen' in one_line_error(ValueError, Replay, tmp_path, minlen=10, maxlen=5)
  assert 'chunk' in one_line_error(ValueError, Replay, tmp_path, minlen=10, chunk=5)
  replay = Replay(tmp_path, minlen=5, maxlen=5)
  steps = list(transitions(10))
  assert 'is_first' in one_line_error(ValueError, replay.add_step, steps[1])
  assert 'is_last' in one_line_error(ValueError, replay.add_step, {'reward': 1.0})
  replay.add_step(steps[0])
  assert 'is_first=True' in one_line_error(ValueError, replay.add_step, steps[0])
  bad = dict(steps[1], image=np.zeros((8, 8, 1), np.uint8))
  assert 'image' in one_line_error(ValueError, replay.add_step, bad)
  bad = dict(steps[1], vector=np.zeros(3, np.float32))
  assert 'vector' in one_line_error(ValueError, replay.add_step, bad)
  ep = episode(10)
  ep['is_last'][-1] = False
  assert 'is_last' in one_line_error(ValueError, replay.add_episode, ep)
  assert "'reward'" in one_line_error(ValueError, replay.add_episode,
                                      dict(episode(10), reward=np.zeros(3, np.float32)))
  assert 'batch' in one_line_error(ValueError, replay.sample, 0, 10)


def test_bytes_per_step_for_atari():
  obs_space, act_space = make_spaces(image=(64, 64, 1), actions=6)
  from_spaces = bytes_per_step({**obs_space.spaces, **act_space.spaces})
  example = {key: np.zeros(space.shape, space.dtype) for key, space in obs_space.spaces.items()}
  example['action'] = np.zeros(6, np.float32)
  example['log_lives'] = np.int32(3)
  assert from_spaces == bytes_per_step(example) == 4096 + 4 + 3 + 24
  assert 8.2e9 < 2e6 * from_spaces < 8.3e9


# Parity with the paper's sampler (dreamerv2 2.2.0, common/replay.py) on the same episodes.

def paper_replay_module():
  """The paper's replay module, loaded from the installed package's file (it needs numpy and
  TensorFlow only; its package's other modules are not imported)."""
  import importlib.util
  spec = importlib.util.find_spec('dreamerv2')
  path = (Path(list(spec.submodule_search_locations)[0]) / 'common' / 'replay.py'
          if spec and spec.submodule_search_locations else None)
  if path is None or not path.exists():
    pytest.fail("the paper's code (package dreamerv2) is not installed: "
                'pip install --no-deps dreamerv2==2.2.0', pytrace=False)
  module_spec = importlib.util.spec_from_file_location('paper_common_replay', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def tally(sample, draws, bin_size=1):
  """Counts of (episode, start // bin_size, length) over `draws` sampled sequences; episode i
  was built with rewards 10000 i + t, so the first reward names episode and start."""
  import collections
  counts = collections.Counter()
  for _ in range(draws):
    reward = sample()['reward']
    first = int(reward[0])
    counts[first // 10000, first % 10000 // bin_size, len(reward)] += 1
  return counts


def same_distribution_p(a, b):
  """Chi-square test of homogeneity of two tallies; cells expected < 5 are pooled into one."""
  import scipy.stats
  keys = sorted(set(a) | set(b))
  table = np.array([[a[k] for k in keys], [b[k] for k in keys]], float)
  expected = table.sum(0) * table.sum(1, keepdims=True) / table.sum()
  small = expected.min(0) < 5
  if small.any():
    table = np.concatenate([table[:, ~small], table[:, small].sum(1, keepdims=True)], 1)
  return float(scipy.stats.chi2_contingency(table).pvalue)


def paper_tally(tmp_path, lengths, draws, bin_size=1, **kwargs):
  module = paper_replay_module()
  paper = module.Replay(tmp_path / 'paper', capacity=0, **kwargs)
  for i, length in enumerate(lengths):
    paper.add_episode(episode(length, start=10000 * i))
  paper._random = np.random.RandomState(1)  # Episode and start; the length uses np.random.
  state = np.random.get_state()
  np.random.seed(2)
  try:
    return tally(paper._sample_sequence, draws, bin_size)
  finally:
    np.random.set_state(state)


def our_replay(tmp_path, lengths, cls=Replay, **kwargs):
  replay = cls(tmp_path / 'ours', seed=0, **kwargs)
  for i, length in enumerate(lengths):
    replay.add_episode(episode(length, start=10000 * i))
  return replay


def mutant(old: str, new: str):
  """Replay with one expression of `_sample_sequence` replaced: a bug the test must catch."""
  import inspect
  import textwrap
  source = textwrap.dedent(inspect.getsource(Replay._sample_sequence))
  assert source.count(old) == 1, old
  namespace = {}
  exec(source.replace(old, new), vars(replay_lib), namespace)
  return type('Mutant', (Replay,), {'_sample_sequence': namespace['_sample_sequence']})


DRAWS = 20000
DEBUG = dict(lengths=[11, 12, 25, 31, 47, 80], minlen=10, maxlen=30)  # The debug preset's.
PAPER = dict(lengths=[51, 70, 130, 400], minlen=50, maxlen=50)  # The paper's (Atari).
OFF_BY_ONE = ('total - length + 1', 'max(total - length, 1)')  # Last start never drawn.
NO_END_PRIORITY = ('(self._minlen if self._prioritize_ends else 0)', '0')


@pytest.mark.parametrize('case', ['debug', 'paper'])
@pytest.mark.parametrize('prioritize_ends', [True, False])
def test_sampled_sequences_follow_the_papers_distribution(tmp_path, case, prioritize_ends):
  """Episode, start and length of sampled sequences: ours against the paper's sampler on the
  same episodes (all longer than minlen, which the paper requires; see docs/parity-loop.md),
  and a sampler with an injected off-by-one or without end priority, which must differ."""
  kwargs = dict(DEBUG if case == 'debug' else PAPER, prioritize_ends=prioritize_ends)
  lengths = kwargs.pop('lengths')
  paper = paper_tally(tmp_path, lengths, DRAWS, **kwargs)
  ours = tally(our_replay(tmp_path, lengths, **kwargs)._sample_sequence, DRAWS)
  p = same_distribution_p(ours, paper)
  print(f'{case} prioritize_ends={prioritize_ends}: p={p:.3g}')
  assert p > 1e-3, p
  bug = NO_END_PRIORITY if prioritize_ends else OFF_BY_ONE
  wrong = our_replay(tmp_path / 'mutant', lengths, cls=mutant(*bug), **kwargs)
  p_bug = same_distribution_p(tally(wrong._sample_sequence, DRAWS), paper)
  print(f'  with {bug[1]!r} for {bug[0]!r}: p={p_bug:.3g}')
  assert p_bug < 1e-6, p_bug


def test_long_episodes_are_sampled_as_the_paper_does(tmp_path):
  """Episodes longer than a chunk are stored in pieces; sampling still picks episodes
  uniformly, windows over the whole episode (also across pieces) and favours only its end."""
  lengths, kwargs = [120, 2600], dict(minlen=50, maxlen=50, prioritize_ends=True)
  paper = paper_tally(tmp_path, lengths, DRAWS, bin_size=50, **kwargs)
  replay = our_replay(tmp_path, lengths, **kwargs)
  assert replay.stats['loaded_segments'] == 4  # 120 | 1000 + 1000 + 600
  ours = tally(replay._sample_sequence, DRAWS, bin_size=50)
  p = same_distribution_p(ours, paper)
  print(f'long episodes: p={p:.3g}')
  assert p > 1e-3, p
  check_contiguous(replay.sample(64, 50))


def test_runs_join_only_consecutive_chunks_in_memory(tmp_path):
  replay = Replay(tmp_path, capacity=2000, minlen=20, maxlen=20, chunk=500)
  replay.add_episode(episode(1600))  # 500 + 500 + 600; its first piece is evicted below.
  replay.add_episode(episode(500, start=5000))
  assert replay.stats['loaded_steps'] == 1600
  rewards = replay.sample(256, 20)['reward']
  assert rewards.min() >= 500 and ((rewards >= 980) & (rewards < 1020)).any()
  # A lost middle piece: the pieces around it are never joined.
  middle = next(p for p in files(tmp_path) if episode_files.parse(p.name)[2:] == (1, 500))
  middle.write_bytes(b'corrupt')
  with pytest.warns(UserWarning):
    restarted = Replay(tmp_path, capacity=5000, minlen=20, maxlen=20, chunk=500, seed=1)
  rows = restarted.sample(512, 20)['reward']  # One sequence per row (minlen = maxlen).
  assert not ((rows < 500).any(1) & (rows >= 1000).any(1)).any(), 'joined across the gap'
  assert (rows[:, -1] == 499).any(), 'the run before the gap ends there (end priority)'
