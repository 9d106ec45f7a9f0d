"""scripts/plot.py and dreamerv2_tf.compare on synthetic logdirs, against the paper's score files."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamerv2_tf import compare
from dreamerv2_tf.reference_scores import REFERENCE, gamer_normalized, record_normalized

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'plot.py'
SCORES = Path(__file__).resolve().parents[2] / 'shared' / 'scores'
ATARI = SCORES / 'atari-dreamerv2.json'
needs_scores = pytest.mark.skipif(not ATARI.exists(), reason=f'no paper scores at {SCORES}')

# Evaluation returns per seed at known frames; frame 0 (the untrained agent) is in no bin.
EVALS = {
    0: [(0, -21.0), (400_000, -20.0), (1_000_000, -18.0), (1_600_000, -15.0),
        (2_500_000, -12.0), (2_900_000, -10.0)],
    1: [(500_000, -17.0), (2_000_000, -16.0), (2_200_000, -13.0), (3_000_000, -7.0),
        (3_500_000, -5.0)],
}
# By hand, bins (i*1e6, (i+1)*1e6] labelled (i+1)*1e6; seed 0 / seed 1 / over the seeds present:
#   1e6: mean(-20,-18)=-19 / -17         -> mean -18,   min -19, max -17
#   2e6: -15 / -16                       -> mean -15.5, min -16, max -15
#   3e6: mean(-12,-10)=-11 / mean(-13,-7)=-10 -> mean -10.5, min -11, max -10
#   4e6: - / -5                          -> mean -5 (one seed)
EXPECTED = [(1e6, 2, -18.0, -19.0, -17.0), (2e6, 2, -15.5, -16.0, -15.0),
            (3e6, 2, -10.5, -11.0, -10.0), (4e6, 1, -5.0, -5.0, -5.0)]


def write_run(folder, task, seed, evals, config=True, garbage=False):
  folder.mkdir(parents=True)
  if config:
    (folder / 'config.yaml').write_text(f'task: {task}\naction_repeat: 4\nseed: {seed}\n')
  lines = []
  for step, value in evals:
    lines.append(json.dumps({'step': step, 'eval_return': value}))
    lines.append(json.dumps({'step': step, 'train_return': value - 1, 'model_loss': 0.5}))
  if garbage:
    lines.insert(2, '{"step": 12')  # a half-written line
  (folder / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def cli(*args, cwd=None):
  return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                        text=True, timeout=60, cwd=cwd)


def is_png(path):
  import matplotlib.image
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  image = matplotlib.image.imread(path)
  return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture(scope='module')
def pong(tmp_path_factory):
  """One CLI run over two Pong seeds with the paper's scores: (proc, outdir)."""
  tmp = tmp_path_factory.mktemp('pong')
  for seed, evals in EVALS.items():
    write_run(tmp / 'logs' / f'run{seed}', 'atari_pong', seed, evals, garbage=seed == 0)
  args = ['--indir', tmp / 'logs', '--outdir', tmp / 'out']
  if ATARI.exists():
    args += ['--scores', ATARI, '--show-baselines', 'human_gamer,rainbow_sticky_2e8']
  proc = cli(*args)
  assert proc.returncode == 0, proc.stderr
  return proc, tmp / 'out'


def test_png_and_binned_table(pong):
  proc, out = pong
  assert is_png(out / 'atari_pong.png')
  summary = json.loads((out / 'summary.json').read_text())
  rows = [r for r in summary['rows'] if r['task'] == 'atari_pong']
  got = [(r['frames'], r['seeds'], r['return_mean'], r['return_min'], r['return_max'])
         for r in rows]
  assert np.allclose(got, EXPECTED)
  assert summary['tasks']['atari_pong']['seeds'] == ['0', '1']
  assert 'atari_pong' in proc.stdout and '-15.50' in proc.stdout  # the printed table
  warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and 'run0' in warnings[0] and 'skipped 1' in warnings[0]


@needs_scores
def test_paper_numbers_and_normalized_scores(pong):
  _, out = pong
  rows = json.loads((out / 'summary.json').read_text())['rows']
  published = [r for r in json.loads(ATARI.read_text())
               if r['task'] == 'atari_pong' and r['method'] == 'dreamerv2']
  baselines = json.loads((SCORES / 'baselines.json').read_text())['atari_pong']
  for row in rows:
    # The paper's files use the same bins, so each seed has a value at exactly these frames.
    values = [r['ys'][r['xs'].index(row['frames'])] for r in published
              if row['frames'] in r['xs']]
    assert row['paper_seeds'] == len(values) >= 5
    assert row['paper_mean'] == pytest.approx(np.mean(values))
    assert row['paper_min'] == pytest.approx(min(values))
    assert row['paper_max'] == pytest.approx(max(values))
    gamer = (row['return_mean'] - baselines['random']) / (
        baselines['human_gamer'] - baselines['random'])
    assert row['gamer_normalized'] == pytest.approx(gamer)


def test_reference_table_matches_baselines_file():
  assert len(REFERENCE) == 55
  assert gamer_normalized('dmc_walker_walk', 500.0) is None
  if not (SCORES / 'baselines.json').exists():
    pytest.skip(f'no paper scores at {SCORES}')
  baselines = json.loads((SCORES / 'baselines.json').read_text())
  tasks = {r['task'] for r in json.loads(ATARI.read_text())}
  assert set(REFERENCE) == tasks
  for task, (random, gamer, record) in REFERENCE.items():
    assert (random, gamer, record) == (baselines[task]['random'], baselines[task]['human_gamer'],
                                       baselines[task]['human_record'])


def test_bin_curve_convention():
  # Upper edge included, lower edge excluded, frame 0 dropped, unfinished last bin kept.
  xs, ys = compare.bin_curve([0, 1e6, 1e6 + 4, 2.5e6], [9.0, 1.0, 2.0, 3.0], bins=1e6)
  assert xs.tolist() == [1e6, 2e6, 3e6] and ys.tolist() == [1.0, 2.0, 3.0]
  if ATARI.exists():  # binning a published curve at its own width gives it back unchanged
    run = json.loads(ATARI.read_text())[0]
    xs, ys = compare.bin_curve(run['xs'], run['ys'], 1e6)
    assert xs.tolist() == run['xs'] and ys.tolist() == run['ys']
  with pytest.raises(compare.CompareError, match='bins'):
    compare.bin_curve([1.0], [1.0], bins=0)


def test_aggregate_over_atari_tasks(tmp_path):
  finals = {'atari_pong': 10.0, 'atari_breakout': 500.0, 'atari_alien': 1000.0}
  runs = [compare.Run(task, '0', tmp_path, np.array([5e5, 1.5e6]), np.array([-1.0, score]))
          for task, score in finals.items()]
  agg = compare.table(runs, bins=1e6)['aggregate']
  gamer = [gamer_normalized(t, s) for t, s in finals.items()]
  record = [record_normalized(t, s) for t, s in finals.items()]
  assert agg['tasks'] == 3 and agg['frames'] == {t: 2_000_000 for t in finals}
  assert agg['gamer_median'] == pytest.approx(np.median(gamer))
  assert agg['gamer_mean'] == pytest.approx(np.mean(gamer))
  assert agg['record_clipped_mean'] == pytest.approx(np.mean(record))
  random, _, best = REFERENCE['atari_breakout']
  assert record_normalized('atari_breakout', 2 * best) == 1.0  # clipped at the record
  assert record_normalized('atari_breakout', random - 10) < 0  # but not from below


def test_task_and_seed_from_folder_names(tmp_path):
  write_run(tmp_path / 'atari_pong' / '20240101-120000', None, None, [(1e6, 3.0)], config=False)
  [run] = compare.find_runs([tmp_path])
  assert (run.task, run.seed, run.returns.tolist()) == ('atari_pong', '20240101-120000', [3.0])


def test_unknown_task_and_single_point(tmp_path):
  write_run(tmp_path / 'logs' / 'a', 'gym_Foo-v0', 0, [(30_000, 12.0)])
  args = ['--indir', tmp_path / 'logs', '--outdir', tmp_path / 'out']
  proc = cli(*args, *(['--scores', ATARI] if ATARI.exists() else []))
  assert proc.returncode == 0, proc.stderr
  assert is_png(tmp_path / 'out' / 'gym_Foo-v0.png')
  if ATARI.exists():
    assert "gym_Foo-v0: not in the paper's scores" in proc.stdout
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  [row] = summary['rows']
  assert row['return_mean'] == 12.0 and row['paper_mean'] is None
  assert row['gamer_normalized'] is None and summary['aggregate'] is None


@pytest.mark.parametrize('case', ['missing_indir', 'no_runs', 'bad_scores', 'bad_bins',
                                  'bad_baseline'])
def test_bad_input_is_one_line_error(tmp_path, case):
  write_run(tmp_path / 'logs' / 'a', 'atari_pong', 0, [(1e6, 3.0)])
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'bad.json').write_text('{not json')
  base = ['--indir', tmp_path / 'logs', '--outdir', tmp_path / 'out']
  args, named = {
      'missing_indir': (['--indir', tmp_path / 'nope', '--outdir', tmp_path / 'out'], 'nope'),
      'no_runs': (['--indir', tmp_path / 'empty', '--outdir', tmp_path / 'out'], 'empty'),
      'bad_scores': (base + ['--scores', tmp_path / 'bad.json'], 'bad.json'),
      'bad_bins': (base + ['--bins', '-5'], '-5'),
      'bad_baseline': (base + ['--scores', ATARI, '--show-baselines', 'nobody'], 'nobody'),
  }[case]
  if case == 'bad_baseline' and not ATARI.exists():
    pytest.skip(f'no paper scores at {SCORES}')
  proc = cli(*args)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and named in lines[0], proc.stderr
  assert 'Traceback' not in proc.stderr


def test_main_in_process_without_scores(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location('plot_script', SCRIPT)
  plot = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(plot)
  write_run(tmp_path / 'logs' / 'a', 'crafter_reward', 0, [(1e5 * i, float(i)) for i in range(11)])
  assert plot.main(['--indir', str(tmp_path / 'logs'), '--outdir', str(tmp_path / 'out')]) == 0
  assert 'no --scores given' in capsys.readouterr().out
  assert is_png(tmp_path / 'out' / 'crafter_reward.png')
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert summary['tasks']['crafter_reward']['bins'] == 100_000  # 1e6 frames -> ten 1e5 bins
  assert [r['return_mean'] for r in summary['rows']] == [float(i) for i in range(1, 11)]
  assert not list((tmp_path / 'out').glob('.*'))  # no temporary files left behind


def test_labelled_groups_are_separate_curves_and_tables(tmp_path):
  # `mine=... ours=...`: a user's runs against this port's published run, each its own curve.
  write_run(tmp_path / 'mine' / 'a', 'atari_pong', 0, [(1e6, 3.0), (2e6, 5.0)])
  write_run(tmp_path / 'mine' / 'b', 'atari_pong', 1, [(1e6, 1.0), (2e6, 7.0)])
  write_run(tmp_path / 'ours' / 'a', 'atari_pong', 0, [(1e6, -4.0), (2e6, -2.0)])
  proc = cli('--indir', f'mine={tmp_path / "mine"}', f'ours={tmp_path / "ours"}',
             '--outdir', tmp_path / 'out')
  assert proc.returncode == 0, proc.stderr
  assert '== mine ==' in proc.stdout and '== ours ==' in proc.stdout
  assert is_png(tmp_path / 'out' / 'atari_pong.png')
  groups = json.loads((tmp_path / 'out' / 'summary.json').read_text())['groups']
  assert [r['return_mean'] for r in groups['mine']['rows']] == [2.0, 6.0]
  assert [r['return_mean'] for r in groups['ours']['rows']] == [-4.0, -2.0]
  assert groups['mine']['tasks']['atari_pong']['seeds'] == ['0', '1']


def test_frames_widens_the_axis_for_a_run_in_progress(tmp_path):
  # A run at 30k frames of a paper curve that goes to 1e6: by default the paper is cut where the
  # run ends; --frames 9e4 draws it to 9e4 (what the run has yet to reach) and no further.
  spec = importlib.util.spec_from_file_location('plot_script', SCRIPT)
  plot = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(plot)
  write_run(tmp_path / 'logs' / 'a', 'dmc_walker_walk', 0, [(20_000, 50.0), (30_000, 90.0)])
  runs = compare.find_runs([tmp_path / 'logs'])
  paper = [(np.arange(1, 34) * 30_000.0, np.arange(1, 34) * 10.0)] * 2
  drawn = plot.plot_task(tmp_path / 'a.png', 'dmc_walker_walk', {'ours': runs}, 30_000, paper,
                         'dreamerv2', {})
  assert drawn.tolist() == [30_000]
  drawn = plot.plot_task(tmp_path / 'b.png', 'dmc_walker_walk', {'ours': runs}, 30_000, paper,
                         'dreamerv2', {}, frames=9e4)
  assert drawn.tolist() == [30_000, 60_000, 90_000]
  assert is_png(tmp_path / 'b.png')
  proc = cli('--indir', tmp_path / 'logs', '--outdir', tmp_path / 'out', '--frames', '0')
  assert proc.returncode == 2 and "'0' is not allowed" in proc.stderr


def test_rows_a_killed_process_logged_past_its_checkpoint_are_superseded(tmp_path):
  # Killed at 75k after evaluating at 62k; its last checkpoint was at 50k, recording the
  # evaluation at 40k. The restart marks that and evaluates at 62k again (60.0): the curve
  # holds that point once, and the run's frames go back to 50k until it logs further. A row at
  # the checkpoint's own frame stays.
  write_run(tmp_path / 'logs' / 'a', 'dmc_walker_walk', 0, [(20_000, 50.0), (40_000, 90.0)])
  metrics = tmp_path / 'logs' / 'a' / 'metrics.jsonl'
  rows = [{'step': 50_000, 'train_return': 70.0}, {'step': 62_000, 'eval_return': 120.0},
          {'step': 75_000, 'train_return': 80.0},
          {'step': 50_000, 'started': True, 'evaluated': 40_000}]
  with metrics.open('a') as f:
    f.writelines(json.dumps(row) + '\n' for row in rows)
  run, = compare.find_runs([tmp_path / 'logs'])
  assert run.steps.tolist() == [20_000, 40_000] and run.frames == 50_000
  train, = compare.find_runs([tmp_path / 'logs'], key='train_return')
  assert train.steps.tolist() == [20_000, 40_000, 50_000]
  with metrics.open('a') as f:
    f.write(json.dumps({'step': 62_000, 'eval_return': 60.0}) + '\n')
  run, = compare.find_runs([tmp_path / 'logs'])
  assert run.steps.tolist() == [20_000, 40_000, 62_000] and run.returns[-1] == 60.0
  assert run.frames == 62_000
  assert compare.task_curve([run], 30_000)[1].tolist() == [50.0, 90.0, 60.0]


def test_a_random_episode_replayed_after_a_stop_counts_once(tmp_path):
  # Stopped during the first evaluation: the checkpoint records no finished evaluation, so the
  # restart plays the random-policy episode again at the same frame; only the second counts.
  folder = tmp_path / 'logs' / 'b'
  write_run(folder, 'dmc_walker_walk', 0, [])
  rows = [{'step': 2_000, 'eval_random_return': 70.0},
          {'step': 2_000, 'started': True, 'evaluated': None},
          {'step': 2_000, 'eval_random_return': 80.0}, {'step': 2_000, 'eval_return': 10.0}]
  (folder / 'metrics.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  run, = compare.find_runs([tmp_path / 'logs'])
  assert sorted(run.returns.tolist()) == [10.0, 80.0]


def test_bins_a_run_has_not_finished_are_marked(tmp_path):
  # Evaluations at 20k, 40k and 62k; training logged up to 75k: the 90k bin holds one of the
  # evaluations it will hold, so it is marked (row, table, plot) until the run passes 90k.
  write_run(tmp_path / 'logs' / 'a', 'dmc_walker_walk', 0,
            [(20_000, 50.0), (40_000, 90.0), (62_000, 120.0)])
  with (tmp_path / 'logs' / 'a' / 'metrics.jsonl').open('a') as f:
    f.write(json.dumps({'step': 75_000, 'model_loss': 0.5}) + '\n')
  runs = compare.find_runs([tmp_path / 'logs'])
  assert runs[0].frames == 75_000
  summary = compare.table(runs, bins=30_000)
  assert [r['finished'] for r in summary['rows']] == [True, True, False]
  text = compare.format_table(summary)
  assert '90k*' in text and '60k*' not in text and 'not finished' in text
  # A second seed that has run further does not finish the bin for the first.
  other = compare.Run('dmc_walker_walk', '1', tmp_path, np.array([62_000.0]), np.array([1.0]),
                      95_000.0)
  assert compare.finished([runs[0], other], [60_000, 90_000]).tolist() == [True, False]
  assert compare.finished([other], [60_000, 90_000]).tolist() == [True, True]
  proc = cli('--indir', tmp_path / 'logs', '--outdir', tmp_path / 'out')
  assert proc.returncode == 0 and is_png(
      tmp_path / 'out' / 'dmc_walker_walk.png')
  # Drawn: solid up to the last finished bin, dashed to the unfinished one, which is hollow.
  spec = importlib.util.spec_from_file_location('plot_script', SCRIPT)
  plot = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(plot)
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots()
  xs, mean = np.array([3e4, 6e4, 9e4]), np.array([1.0, 2.0, 3.0])
  plot._curve(ax, xs, mean, mean, mean, '#e41a1c', 'ours', np.array([True, True, False]))
  solid, dashed = ax.lines
  assert solid.get_xdata().tolist() == [3e4, 6e4] and solid.get_linestyle() == '-'
  assert dashed.get_xdata().tolist() == [6e4, 9e4] and dashed.get_linestyle() == '--'
  faces = ax.collections[-1].get_facecolors()
  assert faces[-1].tolist() == [1.0, 1.0, 1.0, 1.0] and faces[0].tolist() != [1.0, 1.0, 1.0, 1.0]
  plt.close(fig)


def test_random_episode_after_prefill_is_in_the_first_bin_as_in_the_papers_files(tmp_path):
  # The paper's train.py logs an episode of the random policy after the prefill as eval_return;
  # the loop logs it as eval_random_return, and the comparison bins it with the evaluations.
  write_run(tmp_path / 'a', 'dmc_walker_walk', 0, [(2_000, 10.0), (22_000, 50.0)])
  with (tmp_path / 'a' / 'metrics.jsonl').open('a') as f:
    f.write(json.dumps({'step': 2_000, 'eval_random_return': 60.0}) + '\n')
  [run] = compare.find_runs([tmp_path])
  assert sorted(run.returns.tolist()) == [10.0, 50.0, 60.0]
  assert compare.table([run], bins=30_000)['rows'][0]['return_mean'] == 40.0  # Not 30.
  [train] = compare.find_runs([tmp_path], key='train_return')  # Other keys: only themselves.
  assert sorted(train.returns.tolist()) == [9.0, 49.0]


def test_frames_label():
  assert [compare.frames_label(x) for x in (0, 500, 30_000, 1.5e6, 2e8)] == [
      '0', '500', '30k', '1.5M', '200M']


def test_results_table_counts_updates_with_the_presets_schedule(tmp_path):
  script = ROOT / 'scripts' / 'results_table.py'
  spec = importlib.util.spec_from_file_location('results_table', script)
  table = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(table)
  # dmc_vision: action repeat 2, prefill 1,000, pretrain 100, an update every 5 agent steps.
  assert table.updates('dmc_vision', 1e5) == 100 + (50_000 - 1_000) // 5
  # atari: action repeat 4, prefill 50,000, pretrain 1, an update every 16 agent steps.
  assert table.updates('atari', 2e8) == 1 + (50_000_000 - 50_000) // 16
  scores = tmp_path / 'scores.json'
  scores.write_text(json.dumps([{'task': 'dmc_cartpole_balance', 'method': 'dreamerv2',
                                 'seed': '1', 'xs': [3e4, 6e4], 'ys': [1.0, 2.0]}]))
  proc = subprocess.run([sys.executable, str(script), '--scores',
                         str(scores), '--seconds', 'dmc_vision=3.6'],
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  # 6e4 frames: 100 + (30,000 - 1,000) // 5 = 5,900 updates; x 3.6 s / 0.97 = 5.9 hours.
  assert '| dmc_cartpole_balance | `scripts/train.py --configs dmc_vision --task ' \
         'dmc_cartpole_balance` | 60k | 1 | 5,900 | 6 |' in proc.stdout, proc.stdout
  # With the share of wall time a run logged for training: 5,900 x 3.6 s / 0.5 = 11.8 hours.
  # GPU hours: wall seconds per update of a whole run, so the share does not divide them:
  # 5,900 x 3.6 s = 5.9 hours.
  proc = subprocess.run([sys.executable, str(script), '--scores', str(scores), '--seconds',
                         'dmc_vision=3.6', '--share', 'dmc_vision=0.5', '--gpu-seconds',
                         'dmc_vision=3.6'], capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0 and '| 5,900 | 12 | 6 |' in proc.stdout, proc.stderr + proc.stdout
  proc = subprocess.run([sys.executable, str(script), '--scores', str(scores), '--share',
                         'dmc_vision=1.5'], capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2 and "'dmc_vision=1.5' is not allowed" in proc.stderr


def test_the_published_runs_plot_to_the_numbers_the_results_page_states(tmp_path):
  # docs/results/ holds this port's runs as a run leaves them; users plot theirs beside them
  # (`ours=docs/results/...`). The bins are the ones README and docs/results.md quote.
  results = ROOT / 'docs' / 'results'
  proc = cli('--indir', f'cartpole={results / "dmc_cartpole_balance"}',
             f'walker={results / "dmc_walker_walk"}', '--outdir', tmp_path / 'out')
  assert proc.returncode == 0, proc.stderr
  groups = json.loads((tmp_path / 'out' / 'summary.json').read_text())['groups']
  for group, task, want in (('cartpole', 'dmc_cartpole_balance', [258.5, 445.2, 749.7]),
                            ('walker', 'dmc_walker_walk', [64.8, 204.1, 423.8])):
    rows = [r for r in groups[group]['rows'] if r['task'] == task]
    assert [r['frames'] for r in rows] == [30_000, 60_000, 90_000], rows
    assert [round(r['return_mean'], 1) for r in rows] == want, rows
