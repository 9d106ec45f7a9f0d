"""Train-step throughput with 1 and N data-parallel replicas (MirroredStrategy).

  python scripts/bench_distribute.py                        # atari preset, 1 and 2 replicas
  python scripts/bench_distribute.py --replicas 1,2,4 --steps 5 --out dist.json
  python scripts/bench_distribute.py --configs atari debug  # quick smoke run

On a machine without GPUs the CPU is split into N logical devices (one per replica); they share
the same cores, so this measures the overhead of the data-parallel step rather than a speedup.
With GPUs the replicas are the first N GPUs. Prints a table and JSON with samples/s (batch x
length per second) per replica count, and the ratio to one replica. Other arguments override
config keys (`--dataset.batch 32`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.config import load_config, main_guard  # noqa: E402


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=['atari'])
  parser.add_argument('--replicas', default='1,2', help='comma-separated replica counts')
  parser.add_argument('--steps', type=int, default=3, help='timed train steps per count')
  parser.add_argument('--out', default='', help='also write the JSON here')
  args, rest = parser.parse_known_args(argv)
  try:
    args.replicas = [int(n) for n in args.replicas.split(',')]
  except ValueError:
    parser.error(f'--replicas {args.replicas!r}: expected comma-separated integers, e.g. 1,2')
  if not args.replicas or min(args.replicas) < 1:
    parser.error(f'--replicas {args.replicas}: counts must be at least 1')
  return args, rest


def main(argv=None):
  args, rest = parse(sys.argv[1:] if argv is None else argv)
  config = load_config(args.configs, rest)
  import tensorflow as tf
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    if max(args.replicas) > len(gpus):
      raise ValueError(f'--replicas {max(args.replicas)} needs that many GPUs; {len(gpus)} visible')
    devices = [f'/gpu:{i}' for i in range(len(gpus))]
  else:
    # Logical CPU devices must be configured before TensorFlow initialises its runtime.
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * max(args.replicas))
    devices = [f'/cpu:{i}' for i in range(max(args.replicas))]
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  spaces = make_spaces()
  B, T = config.dataset.batch, config.dataset.length
  batch = make_batch(*spaces, batch=B, length=T, seed=config.seed)
  rows = []
  # The default strategy first: the plain single-device step, the reference for the ratios.
  for name, count in [('default', 1)] + [('mirrored', n) for n in args.replicas]:
    print(f'benchmarking {name} with {count} replica(s) ...', file=sys.stderr, flush=True)
    strategy = (tf.distribute.MirroredStrategy(devices[:count]) if name == 'mirrored'
                else tf.distribute.get_strategy())
    agent = Agent(config, *spaces, strategy=strategy)
    start = time.perf_counter()
    agent.train(batch)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      agent.train(batch)
      times.append(time.perf_counter() - start)
    median = statistics.median(times)
    rows.append({'strategy': name, 'replicas': count,
                 'devices': devices[:count] if name == 'mirrored' else [],
                 'first_call_s': round(first, 2),
                 'train_step_median_s': round(median, 3),
                 'samples_per_s': round(B * T / median, 1)})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  for row in rows:
    row['speedup_vs_default'] = round(row['samples_per_s'] / rows[0]['samples_per_s'], 2)
  result = {'configs': args.configs, 'overrides': rest, 'global_batch': [B, T],
            'precision': str(config.precision), 'cpus': os.cpu_count(), 'gpus': len(gpus),
            'tensorflow': tf.__version__, 'rows': rows}
  print(f'{"strategy":>8}  {"replicas":>8}  {"step s":>8}  {"samples/s":>10}  {"vs default":>10}',
        file=sys.stderr)
  for row in rows:
    print(f'{row["strategy"]:>8}  {row["replicas"]:>8}  {row["train_step_median_s"]:>8}  '
          f'{row["samples_per_s"]:>10}  {row["speedup_vs_default"]:>10}', file=sys.stderr)
  from dreamerv2_tf.files import print_json
  print_json(result, args.out)


if __name__ == '__main__':
  main_guard(main)
