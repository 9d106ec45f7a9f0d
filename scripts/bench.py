"""Benchmark of the agent's train step and policy step, per precision/XLA variant.

  python scripts/bench.py                                  # atari preset: 32+plain, 32, bf16
  python scripts/bench.py --variants 32,bf16,32+xla --steps 10 --out bench.json
  python scripts/bench.py --configs atari debug --steps 3  # quick smoke run

Builds the agent at the preset on a synthetic batch (64x64x1 images, 6 actions by default) and
prints a table and JSON: first-call (trace/compile) time, median and min train step, batch-1
policy latency (the configured path, and plain tf.function vs XLA side by side), parameter
counts, analytic FLOPs per train step and achieved GFLOP/s, and the matmul peak measured in the
same run. Other arguments override config keys (`--rssm.deter 200`). `--also KEY=VALUE` adds,
for every variant, a row with that override beside the row without it (the cost of a feature
measured side by side: `--also expl_behavior=plan2explore`).

A variant is a precision (32, bf16, 16) with optional modifiers: `+xla` (jit_compile the train
step), `+plain` (Keras' own convolution layers throughout: the straightforward path,
`--decoder.fast_deconv false --encoder.fast_conv false`). Ratios are against the first variant.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from dreamerv2_tf.config import main_guard, load_config  # noqa: E402


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=['atari'])
  parser.add_argument('--variants', default='32+plain,32,bf16',
                      help='comma-separated: 32, bf16, 16, each optionally +xla and/or +plain')
  parser.add_argument('--steps', type=int, default=10, help='timed train steps per variant')
  parser.add_argument('--policy-steps', type=int, default=200)
  parser.add_argument('--image', default='64,64,1', help='image shape H,W,C')
  parser.add_argument('--actions', type=int, default=6)
  parser.add_argument('--continuous', action='store_true',
                      help='continuous actions in [-1, 1] (the DMC presets), not one-hot')
  parser.add_argument('--also', action='append', default=[], metavar='KEY=VALUE[,KEY=VALUE]',
                      help='also benchmark every variant with these config overrides')
  parser.add_argument('--out', default='', help='also write the JSON here')
  args, rest = parser.parse_known_args(argv)
  for also in args.also:
    if not all('=' in pair and pair.split('=', 1)[0] for pair in also.split(',')):
      parser.error(f'--also {also!r}: expected KEY=VALUE pairs separated by commas')
  for variant in args.variants.split(','):
    prec, *mods = variant.split('+')
    if prec not in ('32', '16', 'bf16') or not set(mods) <= {'xla', 'plain'}:
      parser.error(f'variant {variant!r}: expected 32, 16 or bf16, optionally with +xla '
                   'and/or +plain')
  return args, rest


def also_argv(also: str) -> list[str]:
  """'expl_behavior=plan2explore,disag_models=5' -> ['--expl_behavior', 'plan2explore', ...]."""
  pairs = [pair.split('=', 1) for pair in also.split(',')]
  return [x for key, value in pairs for x in ('--' + key, value)]


def matmul_peak(tf, dtype, size=2048, repeats=20) -> float:
  """GFLOP/s of a square matmul chain, the hardware reference for the train step."""
  a = tf.random.normal((size, size), dtype=tf.float32)
  a = tf.cast(a, dtype)
  fn = tf.function(lambda x: tf.reduce_sum(tf.cast(x @ x, tf.float32)))
  fn(a).numpy()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn(a).numpy()
    times.append(time.perf_counter() - start)
  return 2 * size ** 3 / min(times) / 1e9


def bench_variant(config, spaces, batch, variant, steps, policy_steps) -> dict:
  import tensorflow as tf
  from dreamerv2_tf import flops
  from dreamerv2_tf.agent import Agent
  prec, *mods = variant.split('+')
  xla = 'xla' in mods
  config = config.update({'precision': prec, 'xla': xla, 'jit': True,
                          'decoder.fast_deconv': 'plain' not in mods,
                          'encoder.fast_conv': 'plain' not in mods})
  tf.keras.backend.clear_session()
  agent = Agent(config, *spaces)
  start = time.perf_counter()
  metrics = agent.train(batch)
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    metrics = agent.train(batch)
    times.append(time.perf_counter() - start)
  obs = {k: v[:1, 0] for k, v in batch.items() if k != 'action'}
  policy = policy_latency(agent, obs, policy_steps)
  lat = policy['configured']
  B, T = batch['action'].shape[:2]
  fl = flops.train_step_flops(agent, B, T)
  count = lambda mods: sum(int(np.prod(v.shape)) for m in mods for v in m.trainable_variables)
  median = statistics.median(times)
  return {
      'variant': variant, 'precision': prec, 'xla': bool(xla),
      'first_call_s': round(first, 3), 'train_step_median_s': round(median, 4),
      'train_step_min_s': round(min(times), 4),
      'policy_step_median_ms': round(1e3 * statistics.median(lat), 3),
      'policy_step_min_ms': round(1e3 * min(lat), 3),
      'policy_xla_config': str(config.policy_xla),
      'policy_plain_ms': round(1e3 * statistics.median(policy['plain']), 3),
      'policy_xla_ms': round(1e3 * statistics.median(policy['xla']), 3),
      'policy_speedup': round(statistics.median(policy['plain']) /
                              statistics.median(policy['xla']), 2),
      'policy_first_call_s': policy['first_call_s'],
      'gflop_per_train_step': round(fl['total'] / 1e9, 1),
      'gflop_by_phase': {k: round(v / 1e9, 1) for k, v in fl.items() if k != 'total'},
      'achieved_gflops': round(fl['total'] / median / 1e9, 1),
      'params': {'world_model': count(agent.wm.modules_), 'actor': count([agent.ac.actor]),
                 'critic': count([agent.ac.critic])},
      'model_loss': round(metrics['model_loss'], 4),
      'finite': bool(all(np.isfinite(v) for v in metrics.values())),
  }


def policy_latency(agent, obs, steps: int) -> dict:
  """Seconds per batch-1 `agent.policy` call: the configured step, and plain and XLA steps.

  The three run round-robin, so that the noise of a shared machine hits them alike; each is
  swapped in as the agent's train-mode step, so all three include `Agent.policy`'s own work.
  """
  fns = {'configured': agent._policy_fns['train'],
         'plain': agent._compile_policy('train', xla=False),
         'xla': agent._compile_policy('train', xla=True)}
  states = dict.fromkeys(fns)
  times = {name: [] for name in fns}
  first = {}
  try:
    for i in range(steps + 5):  # Five warm-up calls: trace, compile, caches.
      for name, fn in fns.items():
        agent._policy_fns['train'] = fn
        start = time.perf_counter()
        _, states[name] = agent.policy(obs, states[name], 'train')
        if i == 0:
          first[name] = round(time.perf_counter() - start, 3)
        if i >= 5:
          times[name].append(time.perf_counter() - start)
  finally:
    agent._policy_fns['train'] = fns['configured']
  return {**times, 'first_call_s': {k: first[k] for k in ('plain', 'xla')}}


def main(argv=None):
  args, rest = parse(sys.argv[1:] if argv is None else argv)
  config = load_config(args.configs, rest)
  # Loaded up front: a bad key or value stops the run before anything is timed.
  alsos = {also: load_config(args.configs, rest + also_argv(also)) for also in args.also}
  import tensorflow as tf
  from dreamerv2_tf import precision
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  tf.random.set_seed(config.seed)
  image = tuple(int(x) for x in args.image.split(','))
  spaces = make_spaces(image=image, actions=args.actions, continuous=args.continuous)
  batch = make_batch(*spaces, batch=config.dataset.batch, length=config.dataset.length,
                     seed=config.seed)
  result = {
      'configs': args.configs, 'overrides': rest, 'image': list(image), 'actions': args.actions,
      'continuous': args.continuous,
      'batch': [config.dataset.batch, config.dataset.length],
      'machine': precision.machine(),
      'matmul_peak_gflops': {'float32': round(matmul_peak(tf, tf.float32), 1),
                             'bfloat16': round(matmul_peak(tf, tf.bfloat16), 1)},
      'variants': [],
  }
  for variant in args.variants.split(','):
    for also, cfg in {'': config, **alsos}.items():
      print(f'benchmarking {variant} {also}...', file=sys.stderr, flush=True)
      row = bench_variant(cfg, spaces, batch, variant, args.steps, args.policy_steps)
      row['also'] = also
      print(json.dumps(row), file=sys.stderr, flush=True)  # Partial results survive a kill.
      result['variants'].append(row)
  if alsos:  # Each override's cost against the same variant without it.
    plain = {r['variant']: r for r in result['variants'] if not r['also']}
    for row in result['variants']:
      if row['also']:
        row['train_cost_vs_without'] = round(
            row['train_step_median_s'] / plain[row['variant']]['train_step_median_s'], 2)
  base = result['variants'][0]
  for row in result['variants']:
    row['train_speedup_vs_first'] = round(base['train_step_median_s'] / row['train_step_median_s'], 2)
    row['policy_speedup_vs_first'] = round(
        base['policy_step_median_ms'] / row['policy_step_median_ms'], 2)
    peak = result['matmul_peak_gflops']['bfloat16' if row['precision'] == 'bf16' else 'float32']
    row['fraction_of_matmul_peak'] = round(row['achieved_gflops'] / peak, 3)
  print_table(result)
  from dreamerv2_tf.files import print_json
  print_json(result, args.out)


def print_table(result):
  cols = ('variant', 'also', 'first_call_s', 'train_step_median_s', 'train_step_min_s',
          'achieved_gflops', 'fraction_of_matmul_peak', 'policy_step_median_ms',
          'policy_plain_ms', 'policy_xla_ms', 'policy_speedup', 'train_speedup_vs_first')
  if any(row['also'] for row in result['variants']):
    cols += ('train_cost_vs_without',)
  rows = [[str(row.get(c, '')) for c in cols] for row in result['variants']]
  widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
  line = lambda cells: '  '.join(c.rjust(w) for c, w in zip(cells, widths))
  print(f"matmul peak GFLOP/s: {result['matmul_peak_gflops']}", file=sys.stderr)
  print(line(cols), file=sys.stderr)
  for r in rows:
    print(line(r), file=sys.stderr)


if __name__ == '__main__':
  main_guard(main)
