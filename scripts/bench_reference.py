"""This port against the paper's own code on the same machine: train step and policy step.

  .venv/bin/python scripts/bench_reference.py                    # atari preset, 2 rounds
  .venv/bin/python scripts/bench_reference.py --rounds 3 --steps 5 --out ref.json

Runs rows of `tests/reference/bench.py`, each in its own process: ours in bf16 and float32, the
paper's code (`pip install --no-deps dreamerv2==2.2.0`, on tf_keras) in float32 and mixed
bfloat16, all on the same synthetic batch (16 x 50, 64x64x1 images, 6 actions at the atari
preset). The rows alternate, round after round (ours, paper, ours, paper, ...), so that the
load of a shared machine hits them alike, and the medians over rounds are compared. Also
measures the matmul peak (float32 and bfloat16) in the same run, and reports our step's
achieved GFLOP/s as a fraction of it. Prints a table to stderr and JSON to stdout. Never run it
while another TensorFlow job runs: the ratios would measure the other job.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = (('ours', 'bf16'), ('paper', '32'), ('ours', '32'), ('paper', 'bf16'))
PEAK = '''
import json, importlib.util, sys
import tensorflow as tf
spec = importlib.util.spec_from_file_location('bench', sys.argv[1])
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
print(json.dumps({'float32': bench.matmul_peak(tf, tf.float32),
                  'bfloat16': bench.matmul_peak(tf, tf.bfloat16)}))
'''


def _run(args: list[str], legacy_keras: bool = False) -> dict:
  from dreamerv2_tf import onednn
  # Every row on the kernels a user's program gets, whatever its process imports first.
  env = {**os.environ, **onednn.child_env(), 'TF_CPP_MIN_LOG_LEVEL': '3'}
  if legacy_keras:
    env['TF_USE_LEGACY_KERAS'] = '1'
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True)
  if proc.returncode:
    tail = proc.stderr.strip().splitlines()[-1:] or ['(no output)']
    sys.exit(f'error: {" ".join(args[:4])} failed: {tail[0]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu() -> str:
  try:
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--presets', nargs='+', default=['atari'])
  parser.add_argument('--rounds', type=int, default=2, help='alternating rounds of every row')
  parser.add_argument('--steps', type=int, default=5, help='timed train steps per row and round')
  parser.add_argument('--policy-steps', type=int, default=100)
  parser.add_argument('--out', default='', help='also write the JSON here')
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps < 1 or args.policy_steps < 1:
    parser.error('--rounds, --steps and --policy-steps must be at least 1')
  from dreamerv2_tf.files import print_json
  peak = _run(['-c', PEAK, str(ROOT / 'scripts' / 'bench.py')])
  runs = {row: [] for row in ROWS}
  for index in range(args.rounds):
    for side, prec in ROWS:
      print(f'round {index + 1}/{args.rounds}: {side} {prec} ...', file=sys.stderr, flush=True)
      runs[(side, prec)].append(_run(
          ['-m', 'tests.reference.bench', side, prec, str(args.steps), str(args.policy_steps),
           *args.presets], legacy_keras=side == 'paper'))
  rows = []
  for (side, prec), results in runs.items():
    train = statistics.median(t for r in results for t in r['train_step_s'])
    row = {'side': side, 'precision': prec,
           'first_call_s': round(statistics.median(r['first_call_s'] for r in results), 1),
           'train_step_median_s': round(train, 3),
           'train_step_by_round_s': [r['train_step_median_s'] for r in results],
           'policy_step_median_ms': round(statistics.median(
               r['policy_step_median_ms'] for r in results), 2)}
    if 'gflop_per_train_step' in results[0]:
      gflop = results[0]['gflop_per_train_step']
      top = peak['bfloat16' if prec == 'bf16' else 'float32']
      row.update(gflop_per_train_step=gflop, achieved_gflops=round(gflop / train, 1),
                 fraction_of_matmul_peak=round(gflop / train / top, 3))
    rows.append(row)
  by = {(r['side'], r['precision']): r for r in rows}
  paper_train = min(by[('paper', p)]['train_step_median_s'] for p in ('32', 'bf16'))
  paper_policy = min(by[('paper', p)]['policy_step_median_ms'] for p in ('32', 'bf16'))
  for row in rows:
    row['train_speedup_vs_paper_best'] = round(paper_train / row['train_step_median_s'], 2)
    row['policy_speedup_vs_paper_best'] = round(paper_policy / row['policy_step_median_ms'], 2)
  result = {'presets': args.presets, 'rounds': args.rounds, 'steps': args.steps,
            'machine': {'cpu': _cpu(), 'cpus': os.cpu_count()},
            'matmul_peak_gflops': {k: round(v, 1) for k, v in peak.items()}, 'rows': rows}
  cols = ('side', 'precision', 'first_call_s', 'train_step_median_s', 'policy_step_median_ms',
          'train_speedup_vs_paper_best', 'policy_speedup_vs_paper_best', 'fraction_of_matmul_peak')
  cells = [[str(row.get(c, '-')) for c in cols] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
  print(f"{result['machine']['cpu']}, matmul peak GFLOP/s {result['matmul_peak_gflops']}",
        file=sys.stderr)
  for line in [list(cols)] + cells:
    print('  '.join(c.rjust(w) for c, w in zip(line, widths)), file=sys.stderr)
  print_json(result, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
