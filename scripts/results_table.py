"""Every published DreamerV2 curve, the command that reproduces it, and what a run costs.

  python scripts/results_table.py --scores ../shared/scores/atari-dreamerv2.json \\
      ../shared/scores/dmc-vision-dreamerv2.json --seconds atari=3.1 dmc_vision=2.07 \\
      --share dmc_vision=0.945 --gpu-seconds atari=0.277 dmc_vision=0.277

Prints a Markdown table (docs/results.md holds its output): per task of the paper's score files,
the command, the frames the paper ran, its seeds, the updates that many frames take under the
preset's schedule (prefill, pretrain, one update every `train_every` agent steps), and the hours
at the given seconds per update. Training takes about 97 % of a run's time on a CPU (see
docs/performance.md), so the CPU hours are updates x seconds / 0.97, or / the share a run of the
preset logged (`--share`, its `time_share_train`); they are estimates from a measured step
time, not measured runs. GPU hours are updates x `--gpu-seconds`, wall seconds per update
with everything else of a run included (e.g. from a whole run's reported time: nothing is
measured on a GPU here).
"""
from __future__ import annotations

import argparse
import sys

from dreamerv2_tf import compare
from dreamerv2_tf.config import load_config

TRAIN_SHARE = 0.97  # Of a run's wall time on a CPU, measured by bench_loop (docs/performance.md).
PRESETS = {'atari_': 'atari', 'dmc_': 'dmc_vision'}


def _per_preset(what: str, most: float):
  def parse(text: str) -> tuple[str, float]:
    preset, sep, value = text.partition('=')
    try:
      number = float(value)
    except ValueError:
      number = -1.0
    if not sep or preset not in PRESETS.values() or not 0 < number <= most:
      raise argparse.ArgumentTypeError(
          f'{text!r} is not allowed: give PRESET={what} with PRESET one of '
          f'{", ".join(PRESETS.values())} and a number in (0, {most:g}]')
    return preset, number
  return parse


def updates(preset: str, frames: float) -> int:
  """Updates of a run of `frames` environment frames under the preset's schedule."""
  config = load_config([preset], [])
  steps = frames / config.action_repeat
  return int(config.pretrain + max(0.0, steps - config.prefill) // config.train_every)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scores', nargs='+', required=True, help="the paper's score files")
  parser.add_argument('--seconds', nargs='+', type=_per_preset('SECONDS', float('inf')),
                      default=[], help='PRESET=SECONDS per update, e.g. atari=3.1 (hours column)')
  parser.add_argument('--share', nargs='+', type=_per_preset('FRACTION', 1.0), default=[],
                      help=f'PRESET=FRACTION of wall time spent training, e.g. dmc_vision=0.945 '
                           f'(default {TRAIN_SHARE})')
  parser.add_argument('--gpu-seconds', nargs='+', type=_per_preset('SECONDS', float('inf')),
                      default=[], help='PRESET=wall SECONDS per update of a whole run on a GPU '
                                       '(GPU hours column; an estimate, not measured here)')
  parser.add_argument('--method', default='dreamerv2')
  args = parser.parse_args(argv)
  seconds, share, gpu = dict(args.seconds), dict(args.share), dict(args.gpu_seconds)
  try:
    scores = compare.load_scores(args.scores, args.method)
  except compare.CompareError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print('| task | command | paper frames | paper seeds | updates | CPU hours | GPU hours |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for task in sorted(scores):
    preset = next((p for prefix, p in PRESETS.items() if task.startswith(prefix)), None)
    if preset is None:
      continue
    frames = max(float(xs[-1]) for xs, _ in scores[task])
    count = updates(preset, frames)
    wall = share.get(preset, TRAIN_SHARE)
    hours = f'{count * seconds[preset] / wall / 3600:,.0f}' if preset in seconds else '-'
    gpu_hours = f'{count * gpu[preset] / 3600:,.0f}' if preset in gpu else '-'
    command = f'`scripts/train.py --configs {preset} --task {task}`'
    print(f'| {task} | {command} | {compare.frames_label(frames)} | {len(scores[task])} | '
          f'{count:,} | {hours} | {gpu_hours} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
