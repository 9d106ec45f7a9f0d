"""Training from the same weights: this port and the paper's code, N updates on the same batches.

  python -m tests.reference.pretrain EPISODES WORKDIR [--updates 70] [--seed 0]
      [--configs dmc_vision] [-- CONFIG OVERRIDES]

From the repository root. EPISODES is a directory of stored episodes with images and continuous
actions (a run's `train_episodes`). Both agents start from our weights (seed 0, float32) and
train on the same batches (drawn from the episodes with numpy, seed 0), each with its own
samples: `--seed` sets this port's sampling noise, and the paper's process is left unseeded as
its `train.py` leaves it (a TensorFlow seed makes its imagined latents repeat: docs/parity.md).
Config overrides after `--` apply to both sides (e.g. `-- --model_opt.lr 1e-12` to imagine
from a world model the update barely moves). Every update's metrics go to `ours.jsonl` and
`paper.jsonl`; the table shows a few of them.
The world-model losses should agree closely at every update; quantities of the behaviour
(actor entropy) differ between runs by sampling alone, so compare several runs per side.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from tests.reference.cases import variables
from tests.reference.sampled import run_sides

KEYS = ('image', 'reward', 'is_first', 'is_last', 'is_terminal', 'action')
SHOWN = ('model_loss', 'actor_ent', 'actor_grad_norm', 'critic_slow')


def batches(episodes: pathlib.Path, count: int, batch: int, length: int, seed: int = 0):
  """`count` batches of `batch` sequences of `length` steps, uniform over episodes and starts."""
  files = sorted(episodes.glob('*.npz'))
  if not files:
    raise SystemExit(f'no episodes (*.npz) in {episodes}')
  eps = [{k: v for k, v in np.load(f).items() if k in KEYS} for f in files]
  eps = [ep for ep in eps if len(ep['reward']) >= length]
  rng = np.random.default_rng(seed)
  for _ in range(count):
    rows = []
    for _ in range(batch):
      ep = eps[rng.integers(len(eps))]
      start = rng.integers(0, len(ep['reward']) - length + 1)
      rows.append({k: v[start:start + length] for k, v in ep.items()})
    yield {k: np.stack([r[k] for r in rows]) for k in KEYS}


def _first(args) -> dict:
  return next(batches(args.episodes, 1, 1, 1))


def _ours(args) -> None:
  import keras
  import tensorflow as tf
  from dreamerv2_tf import Agent, load_config
  from dreamerv2_tf.synthetic import make_spaces
  from tests.reference.ours import AGENT_KEYS, layer_map
  keras.utils.set_random_seed(0)  # The weights; `--seed` below is the sampling noise.
  config = load_config(args.configs,
                       ['--precision', '32', '--seed', str(args.seed), *args.overrides])
  first = _first(args)
  obs_space, act_space = make_spaces(image=first['image'].shape[2:],
                                     actions=first['action'].shape[-1], continuous=True)
  agent = Agent(config, obs_space, act_space)
  weights = variables(layer_map(agent))
  np.savez(args.workdir / 'inputs.npz', **{f'w/{k}': v.numpy() for k, v in weights.items()})
  flat = {k: v for k, v in config.flat.items() if k.split('.')[0] in AGENT_KEYS}
  (args.workdir / 'config.json').write_text(json.dumps(flat))
  step = lambda b: agent.train({k: tf.constant(v) for k, v in b.items()})
  _record(step, args, config, args.workdir / 'ours.jsonl')


def _paper(args) -> None:
  from tests.reference.paper import Box, import_reference, load_weights, reference_config
  agent, common, folder = import_reference()
  import tensorflow as tf
  config = reference_config(common, folder,
                            json.loads((args.workdir / 'config.json').read_text()))
  first = _first(args)
  obs = {'image': Box(0, 1, first['image'].shape[2:]), **{k: Box(0, 1, ()) for k in (
      'reward', 'is_first', 'is_last', 'is_terminal')}}
  agnt = agent.Agent(config, obs, {'action': Box(-1, 1, first['action'].shape[2:])}, 0)
  behavior = agnt._task_behavior
  # The OptimizerV2 Adam the paper ran on, as the parity harness uses.
  for opt, block in ((agnt.wm.model_opt, config.model_opt), (behavior.actor_opt, config.actor_opt),
                     (behavior.critic_opt, config.critic_opt)):
    opt._opt = tf.keras.optimizers.legacy.Adam(block.lr, epsilon=block.eps)
  batch = next(batches(args.episodes, 1, config.dataset.batch, config.dataset.length))
  _, _, outs, _ = agnt.wm.loss({k: tf.constant(v) for k, v in batch.items()})
  for net in (behavior.actor, behavior.critic, behavior._target_critic):
    net(outs['feat'])  # Creates the layers; then our weights go in.
  load_weights(agnt, common, np.load(args.workdir / 'inputs.npz'))
  step = lambda b: agnt.train({k: tf.constant(v) for k, v in b.items()})[1]
  _record(step, args, config, args.workdir / 'paper.jsonl')


def _record(step, args, config, path: pathlib.Path) -> None:
  data = batches(args.episodes, args.updates, config.dataset.batch, config.dataset.length)
  with open(path, 'w') as f:
    for i, batch in enumerate(data):
      metrics = {k: float(np.asarray(v)) for k, v in step(batch).items()}
      f.write(json.dumps({'update': i, **metrics}) + '\n')
      f.flush()


def table(workdir: pathlib.Path, every: int = 10) -> str:
  """Markdown: SHOWN metrics of both sides at every `every`-th update and the last."""
  rows = {side: [json.loads(line) for line in (workdir / f'{side}.jsonl').read_text().splitlines()]
          for side in ('ours', 'paper')}
  last = min(len(r) for r in rows.values()) - 1
  updates = sorted(set(range(0, last + 1, every)) | {last})
  lines = ['| update | ' + ' | '.join(f'{k} ours / paper' for k in SHOWN) + ' |',
           '| --- |' + ' --- |' * len(SHOWN)]
  for i in updates:
    cells = [f'{rows["ours"][i][k]:.4g} / {rows["paper"][i][k]:.4g}' for k in SHOWN]
    lines.append(f'| {i} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  at = argv.index('--') if '--' in argv else len(argv)
  argv, overrides = argv[:at], argv[at + 1:]
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('episodes', type=pathlib.Path)
  parser.add_argument('workdir', type=pathlib.Path)
  parser.add_argument('--updates', type=int, default=70)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--configs', nargs='+', default=['dmc_vision'])
  parser.add_argument('--side', choices=('ours', 'paper'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.overrides = overrides
  from dreamerv2_tf import ConfigError, load_config
  try:  # Bad overrides: one line here, not a traceback from a side's process.
    load_config(args.configs, overrides)
  except ConfigError as e:
    parser.error(str(e))
  if args.updates < 1:
    parser.error(f'--updates {args.updates}: must be at least 1')
  if not any(args.episodes.glob('*.npz')):
    parser.error(f'no episodes (*.npz) in {args.episodes}: give a run\'s train_episodes')
  args.workdir.mkdir(parents=True, exist_ok=True)
  if args.side:
    return (_ours if args.side == 'ours' else _paper)(args)
  run_sides('tests.reference.pretrain', [
      str(args.episodes), str(args.workdir), '--updates', str(args.updates),
      '--seed', str(args.seed), '--configs', *args.configs, '--', *overrides])
  print(table(args.workdir))


if __name__ == '__main__':
  main()
