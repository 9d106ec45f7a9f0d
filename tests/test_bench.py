"""Smoke runs of the benchmark CLIs with tiny models: stdout is one JSON document with the
figures the README quotes, and the ratios are computed from the rows of the same run."""
import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'CUDA_VISIBLE_DEVICES': ''}


def run_json(script, *args):
  proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / script), *args], cwd=ROOT,
                        env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout), proc.stderr


def test_bench_reports_every_variant_with_ratios(tmp_path):
  out = tmp_path / 'bench.json'
  result, err = run_json('bench.py', '--configs', 'atari', 'debug', '--variants', '32+plain,32',
                         '--steps', '2', '--policy-steps', '5', '--out', str(out))
  assert json.loads(out.read_text()) == result
  # Float32 rows only: bfloat16 is emulated, and slow, on CPUs without it (the peak is not).
  assert [row['variant'] for row in result['variants']] == ['32+plain', '32']
  assert all(result['matmul_peak_gflops'][k] > 0 for k in ('float32', 'bfloat16'))
  base, other = result['variants']
  assert base['train_speedup_vs_first'] == 1.0
  want = round(base['train_step_median_s'] / other['train_step_median_s'], 2)
  assert other['train_speedup_vs_first'] == want
  for row in result['variants']:
    assert row['finite'] and row['train_step_median_s'] > 0 and row['policy_step_median_ms'] > 0
    assert math.isclose(sum(row['gflop_by_phase'].values()), row['gflop_per_train_step'],
                        abs_tol=0.5)
  assert 'train_speedup_vs_first' in err  # The table.


def test_bench_loop_reports_acting_and_the_loop_split():
  result, err = run_json('bench_loop.py', '--configs', 'atari', 'debug', '--envs', '1',
                         '--kinds', 'batch', '--seconds', '1', '--train-updates', '2',
                         '--prefill', '120')
  (acting,) = result['acting']
  assert acting['fps'] > 0 and acting['fps_env_only'] > acting['fps']
  shares = result['loop']['time_share']
  assert abs(sum(shares.values()) - 1) < 1e-2 and shares['train'] > 0
  assert 'Logdir:' in err  # The training run's own log goes to stderr, not into the JSON.


def test_bench_distribute_compares_strategies():
  result, _ = run_json('bench_distribute.py', '--configs', 'atari', 'debug', '--replicas', '1',
                       '--steps', '2')
  rows = {row['strategy']: row for row in result['rows']}
  assert set(rows) == {'default', 'mirrored'} and rows['default']['speedup_vs_default'] == 1.0
  assert all(row['samples_per_s'] > 0 for row in rows.values())


def test_profile_step_splits_op_time_by_category():
  result, err = run_json('profile_step.py', '--configs', 'atari', 'debug', '--steps', '1',
                         '--warmup', '1', '--top', '5')
  shares = {row['category']: row['share'] for row in result['categories']}
  assert abs(sum(shares.values()) - 1) < 1e-2
  # The step's convolutions and matmuls are found (not lumped into `elementwise`), and the
  # executor's enclosing `Process` events are not counted as ops.
  assert shares['convolution'] > 0.05 and shares['matmul'] > 0.02
  assert len(result['ops']) == 5 and all(row['op'] != 'Process' for row in result['ops'])
  assert 0 < result['op_ms_per_step'] < 4 * result['wall_ms_per_step_median']
  assert 'convolution' in err  # The table.


def test_profile_step_categories():
  import importlib.util
  script = ROOT / 'scripts' / 'profile_step.py'
  spec = importlib.util.spec_from_file_location('profile_step', script)
  prof = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(prof)
  want = {'_MklNativeFusedConv2D': 'convolution', 'Conv2DBackpropFilter': 'convolution',
          '_MklMatMul': 'matmul', 'BatchMatMulV2': 'matmul', 'Cast': 'cast', 'Sum': 'reduction',
          'Elu': 'elementwise', 'EluGrad': 'elementwise', '_MklTranspose': 'data movement',
          'ConcatV2': 'data movement', 'StatelessRandomUniformV2': 'random',
          'ResourceApplyAdam': 'optimizer', 'Mul': 'elementwise'}
  assert {op: prof.category(op) for op in want} == want


def test_bench_reference_alternates_rows_and_compares_with_the_paper_best(tmp_path, monkeypatch,
                                                                          capsys):
  # The rows' processes are faked: this checks the order (rows alternate within each round, so a
  # shared machine's load hits both codes alike) and the ratios, not TensorFlow.
  import importlib.util
  spec = importlib.util.spec_from_file_location('bench_reference',
                                                ROOT / 'scripts' / 'bench_reference.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  train = {('ours', 'bf16'): 2.0, ('paper', '32'): 8.0, ('ours', '32'): 4.0, ('paper', 'bf16'): 5.0}
  policy = {('ours', 'bf16'): 2.0, ('paper', '32'): 6.0, ('ours', '32'): 3.0, ('paper', 'bf16'): 9.0}
  calls = []

  def fake_run(args, legacy_keras=False):
    if args[0] == '-c':
      return {'float32': 100.0, 'bfloat16': 400.0}
    side, prec = args[2], args[3]
    assert legacy_keras == (side == 'paper')  # The paper's code runs on tf_keras.
    calls.append((side, prec))
    row = {'train_step_s': [train[side, prec]] * 3, 'first_call_s': 30.0,
           'train_step_median_s': train[side, prec], 'policy_step_median_ms': policy[side, prec]}
    if side == 'ours':
      row['gflop_per_train_step'] = 800.0
    return row

  monkeypatch.setattr(module, '_run', fake_run)
  out = tmp_path / 'ref.json'
  assert module.main(['--rounds', '2', '--out', str(out)]) == 0
  assert calls == list(module.ROWS) * 2
  result = json.loads(out.read_text())
  assert json.loads(capsys.readouterr().out) == result
  rows = {(r['side'], r['precision']): r for r in result['rows']}
  assert rows['ours', 'bf16']['train_speedup_vs_paper_best'] == 2.5  # 5.0 / 2.0
  assert rows['ours', '32']['policy_speedup_vs_paper_best'] == 2.0  # 6.0 / 3.0
  assert rows['ours', 'bf16']['fraction_of_matmul_peak'] == 1.0  # 800 / 2.0 / 400
  assert rows['ours', '32']['fraction_of_matmul_peak'] == 2.0  # 800 / 4.0 / 100
  assert 'fraction_of_matmul_peak' not in rows['paper', '32']


def test_bench_also_measures_an_override_beside_the_same_variant(tmp_path):
  result, err = run_json('bench.py', '--configs', 'atari', 'debug', '--variants', '32',
                         '--steps', '2', '--policy-steps', '5',
                         '--also', 'expl_behavior=plan2explore')
  without, with_ = result['variants']
  assert (without['also'], with_['also']) == ('', 'expl_behavior=plan2explore')
  assert 'exploration' not in without['gflop_by_phase']
  assert 'exploration' in with_['gflop_by_phase']  # (rounded to 0.1 GFLOP: tiny here)
  assert with_['train_cost_vs_without'] == round(
      with_['train_step_median_s'] / without['train_step_median_s'], 2)
  assert 'train_cost_vs_without' in err


def test_bench_also_rejects_a_malformed_override():
  proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'bench.py'), '--also',
                         'expl_behavior'], cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert proc.returncode == 2 and "--also 'expl_behavior'" in proc.stderr


def test_exploration_flops_count_every_ensemble_member():
  import dreamerv2_tf
  from dreamerv2_tf import flops
  from dreamerv2_tf.synthetic import make_spaces

  def phases(*argv):
    config = dreamerv2_tf.load_config(['debug'], ['--precision', '32', *argv])
    agent = dreamerv2_tf.Agent(config, *make_spaces(image=(64, 64, 1), actions=3))
    return agent, flops.train_step_flops(agent, 4, 10)

  _, greedy = phases()
  assert 'exploration' not in greedy
  agent, three = phases('--expl_behavior', 'plan2explore', '--disag_models', '3')
  _, five = phases('--expl_behavior', 'plan2explore', '--disag_models', '5')
  # Each member is trained on the 40 replayed steps (forward + backward) and runs on every
  # imagined state (H + 1 per start) to give the reward.
  member = flops.mlp_flops(agent.expl.heads[0])
  horizon = agent.config.imag_horizon
  assert math.isclose(five['exploration'] - three['exploration'],
                      2 * 40 * member * (3 + horizon + 1))
  assert five['total'] - five['exploration'] == greedy['total']
  _, model_loss = phases('--expl_behavior', 'model_loss')
  assert 0 < model_loss['exploration'] < three['exploration']


def test_kernel_ceiling_times_each_part_under_each_variant():
  result, err = run_json('kernel_ceiling.py', '--configs', 'atari', 'debug', '--repeats', '1',
                         '--variants', 'bf16,32+plain')
  parts = [(row['variant'], row['part']) for row in result['rows']]
  # +plain only swaps the convolution kernels, so it times only the convolution parts.
  assert parts == [('bf16', 'encoder'), ('bf16', 'decoder'), ('bf16', 'heads'), ('bf16', 'gemm'),
                   ('bf16', 'policy_step'), ('bf16', 'policy_encoder'),
                   ('bf16', 'policy_matvecs'), ('bf16', 'policy_call'),
                   ('32+plain', 'encoder'), ('32+plain', 'decoder'),
                   ('32+plain', 'policy_encoder')]
  assert all(row['seconds'] > 0 for row in result['rows'])
  best = result['best_gflops']
  for part in ('encoder', 'decoder', 'heads'):
    assert best[part] == max(r['gflops'] for r in result['rows'] if r['part'] == part)
  assert set(best) == {'encoder', 'decoder', 'heads', 'gemm'}
  # Each part's FLOPs at its best rate; every FLOP of the step is counted once.
  gflop = {r['part']: r['gflop'] for r in result['rows'] if 'gflop' in r}
  rest = result['step_gflop'] - gflop['encoder'] - gflop['decoder']
  want = gflop['encoder'] / best['encoder'] + gflop['decoder'] / best['decoder'] + rest / best['heads']
  assert math.isclose(result['ceiling_s'], want, rel_tol=0.05, abs_tol=2e-3)
  assert result['machine']['cpus'] == os.cpu_count() and result['machine']['cpu']
  assert 'no step is faster than' in err


def test_kernel_ceiling_needs_a_variant_that_times_the_heads():
  proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'kernel_ceiling.py'),
                         '--variants', '32+plain'], cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  assert "--variants 32+plain: needs one without +plain" in proc.stderr
