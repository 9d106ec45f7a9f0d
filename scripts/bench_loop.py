"""Throughput of acting and of the whole training loop on Atari Pong, and where the time goes.

  python scripts/bench_loop.py                          # both parts, about 3 minutes on 2 cores
  python scripts/bench_loop.py --part acting --envs 1,8 --seconds 10
  python scripts/bench_loop.py --part loop --train-updates 8 --out loop.json

acting: the agent's train-mode policy (atari preset networks, random initial weights) plays
  atari_pong through the `Driver`, without replay or training, for each `--envs` count, with the
  envs in this process (`BatchEnv`) and on ale-py's C++ vector env (`envs_parallel ale_vector`).
  Frames = agent steps x action_repeat (4). Each row also gives the env alone (random actions
  through the same driver) and the mean env and policy call.
loop: `dreamerv2_tf.loop.train` at the atari preset for a short run in a temporary logdir:
  `prefill` random steps, then `--train-updates` updates, one every `train_every` steps, without
  evaluation. The loop logs the share of wall time per part (env stepping, policy, replay add and
  sampling, train step, evaluation, other) at each log write; this averages the records after
  the first one, which holds the tracing of the train step.

Prints tables on stderr and the JSON on stdout (and to `--out`). Other arguments override config
keys, e.g. `--policy_xla false` or `--dataset.batch 8`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from dreamerv2_tf.config import ConfigError, load_config, main_guard  # noqa: E402

PARTS = ('env', 'policy', 'replay', 'train', 'eval', 'other')


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--part', choices=('acting', 'loop', 'both'), default='both')
  parser.add_argument('--configs', nargs='+', default=['atari'])
  parser.add_argument('--task', default='atari_pong')
  parser.add_argument('--envs', default='1,8', help='comma-separated env counts for acting')
  parser.add_argument('--kinds', default='batch,ale_vector',
                      help='comma-separated: batch (BatchEnv in process), ale_vector')
  parser.add_argument('--seconds', type=float, default=6.0,
                      help='timed acting per row (and as much again for the env alone)')
  parser.add_argument('--train-updates', type=int, default=8,
                      help='updates in the loop run (a train step takes ~5 s here)')
  parser.add_argument('--prefill', type=int, default=1100,
                      help='random agent steps first; the replay stores a 1050-step chunk')
  parser.add_argument('--out', default='', help='also write the JSON here')
  args, rest = parser.parse_known_args(argv)
  args.envs = [int(n) for n in args.envs.split(',')]
  args.kinds = args.kinds.split(',')
  for kind in args.kinds:
    if kind not in ('batch', 'ale_vector'):
      parser.error(f'--kinds {kind!r}: expected batch or ale_vector')
  if min(args.envs) < 1 or args.train_updates < 1 or args.seconds <= 0:
    parser.error('--envs, --train-updates and --seconds must be positive')
  return args, rest


def timed_env(env, clock):
  """The driver's view of `env` (it only resets and steps), with the time spent in `clock`."""
  import types

  def wrap(fn):
    def call(*args):
      start = time.perf_counter()
      try:
        return fn(*args)
      finally:
        clock['env_s'] += time.perf_counter() - start
        clock['env_calls'] += 1
    return call
  return types.SimpleNamespace(reset=wrap(env.reset), step=wrap(env.step))


def drive(driver, policy, num_envs: int, seconds: float) -> int:
  """Runs the driver for about `seconds`; returns the agent steps done (summed over envs)."""
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    steps += driver(policy, steps=32 * num_envs)[0]
  return steps


def bench_acting(config, args) -> list[dict]:
  from dreamerv2_tf import envs as envs_lib
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.driver import Driver, random_policy
  repeat = config.action_repeat
  agent, rows = None, []
  for kind in args.kinds:
    for count in args.envs:
      print(f'acting: {count} env(s), {kind} ...', file=sys.stderr, flush=True)
      env = envs_lib.make_batch_env(config.task, count, config, seed=config.seed,
                                    fast=kind == 'ale_vector')
      try:
        if agent is None:  # One agent for every row: the spaces are the same.
          agent = Agent(config, env.obs_space, env.act_space)
        clock = {'env_s': 0.0, 'env_calls': 0, 'policy_s': 0.0, 'policy_calls': 0}
        driver = Driver(timed_env(env, clock), env.act_space['action'])

        def policy(obs, state):
          start = time.perf_counter()
          outputs, state = agent.policy(obs, state, 'train')
          clock['policy_s'] += time.perf_counter() - start
          clock['policy_calls'] += 1
          return outputs['action'], state

        random = random_policy(env.act_space['action'], np.random.default_rng(config.seed))
        start = time.perf_counter()
        driver(policy, steps=32 * count)  # Traces and compiles the policy.
        warmup = time.perf_counter() - start
        clock.update(dict.fromkeys(clock, 0))
        start = time.perf_counter()
        steps = drive(driver, policy, count, args.seconds)
        elapsed = time.perf_counter() - start
        acting = dict(clock)
        driver.reset()
        start = time.perf_counter()
        env_steps = drive(driver, random, count, args.seconds / 2)
        env_elapsed = time.perf_counter() - start
      finally:
        env.close()
      rows.append({
          'kind': kind, 'envs': count, 'agent_steps': steps,
          'fps': round(steps * repeat / elapsed, 1),
          'fps_env_only': round(env_steps * repeat / env_elapsed, 1),
          'policy_ms': round(1e3 * acting['policy_s'] / max(acting['policy_calls'], 1), 3),
          'env_step_ms': round(1e3 * acting['env_s'] / max(acting['env_calls'], 1), 3),
          'share_policy': round(acting['policy_s'] / elapsed, 3),
          'share_env': round(acting['env_s'] / elapsed, 3),
          'warmup_s': round(warmup, 2),
      })
      print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def bench_loop(config, args) -> dict:
  from dreamerv2_tf.loop import train
  every = int(config.train_every)
  steps = args.prefill + every * args.train_updates
  with tempfile.TemporaryDirectory(prefix='bench_loop_') as logdir:
    run = config.update({
        'logdir': logdir, 'prefill': args.prefill, 'steps': steps, 'pretrain': 1,
        'eval_every': 0, 'log_every': 2 * every})  # A record every second update.
    print(f'loop: {steps} agent steps ({args.prefill} prefill, {args.train_updates} updates) '
          '...', file=sys.stderr, flush=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # The run's log; stdout is for the JSON.
      train(None, run)
    total = time.perf_counter() - start
    records = [json.loads(line) for line in
               (pathlib.Path(logdir) / 'metrics.jsonl').read_text().splitlines()]
  timed = [r for r in records if 'time_share_train' in r]
  prefill = [r for r in timed if 'model_loss' not in r]
  training = [r for r in timed if 'model_loss' in r]
  steady = training[1:] or training  # The first holds the train step's tracing.

  def mean(rows, key):
    values = [r[key] for r in rows if key in r]
    return round(statistics.mean(values), 4) if values else None
  return {
      'agent_steps': steps, 'wall_s': round(total, 1), 'records': len(steady),
      'time_share': {part: mean(steady, f'time_share_{part}') for part in PARTS},
      'env_fps': mean(steady, 'env_fps'), 'policy_ms': mean(steady, 'policy_ms'),
      'loop_fps': mean(steady, 'fps'), 'train_steps_per_s': mean(steady, 'train_steps_per_s'),
      'first_record_time_share': {part: training[0].get(f'time_share_{part}') for part in PARTS}
      if training else None,
      'prefill': {'time_share': {part: mean(prefill, f'time_share_{part}') for part in PARTS},
                  'env_fps': mean(prefill, 'env_fps')} if prefill else None,
  }


def print_tables(result):
  err = sys.stderr
  if result.get('acting'):
    cols = ('kind', 'envs', 'fps', 'fps_env_only', 'policy_ms', 'env_step_ms', 'share_policy',
            'share_env')
    rows = [[str(row[c]) for c in cols] for row in result['acting']]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print('\nacting only (frames/s = agent steps x action_repeat)', file=err)
    for cells in [cols, *rows]:
      print('  '.join(c.rjust(w) for c, w in zip(cells, widths)), file=err)
  loop = result.get('loop')
  if loop:
    print(f"\ntraining loop, {loop['records']} records after warm-up: "
          f"{loop['loop_fps']} frames/s, env {loop['env_fps']} frames/s, "
          f"policy {loop['policy_ms']} ms, {loop['train_steps_per_s']} updates/s", file=err)
    for part in PARTS:
      share = loop['time_share'][part]
      print(f'  {part:>7}  {"-" if share is None else f"{100 * share:5.1f} %"}', file=err)


def main(argv=None):
  args, rest = parse(sys.argv[1:] if argv is None else argv)
  config = load_config(args.configs, ['--task', args.task, *rest])
  if not config.task.startswith('atari'):
    raise ConfigError(f'bench_loop is for Atari tasks, got {config.task!r}')
  import tensorflow as tf
  from dreamerv2_tf import envs as envs_lib
  config = config.update({'task': envs_lib.task_name(config.task)})
  result = {'task': config.task, 'configs': args.configs, 'overrides': rest,
            'action_repeat': config.action_repeat, 'policy_xla': str(config.policy_xla),
            'cpus': os.cpu_count(), 'tensorflow': tf.__version__}
  if args.part in ('acting', 'both'):
    result['acting'] = bench_acting(config, args)
  if args.part in ('loop', 'both'):
    result['loop'] = bench_loop(config, args)
  print_tables(result)
  from dreamerv2_tf.files import print_json
  print_json(result, args.out)


if __name__ == '__main__':
  main_guard(main)
