"""Plot training runs against the DreamerV2 paper's curves and print a comparison table.

  python scripts/plot.py --indir logdir --outdir plots --scores scores/atari-dreamerv2.json
  python scripts/plot.py --indir run1 run2 --outdir plots --scores scores/atari-dreamerv2.json \\
      --baselines scores/baselines.json --show-baselines human_gamer,rainbow_sticky_2e8

  # Your runs against the paper and against this port's published run (docs/results/):
  python scripts/plot.py --indir mine=logdir/dmc_cartpole_balance ours=docs/results \
      --outdir plots --scores ../shared/scores/dmc-vision-dreamerv2.json
  # A run still on its way to 1e5 frames, with the paper's curve drawn to there:
  python scripts/plot.py --indir logdir/dmc_cartpole_balance --outdir plots --frames 1e5 \
      --scores ../shared/scores/dmc-vision-dreamerv2.json

Every folder under --indir that holds a metrics.jsonl is a run; runs of the same task are seeds.
`LABEL=PATH` names a group of runs: each group is its own curve, table and entry of
summary.json's `groups` (without labels, summary.json holds the one group's table at its top
level). Writes one PNG per task and summary.json to --outdir and prints the tables. Bins default
to the paper's bin width for the task (1e6 frames for Atari, 3e4 for DMC with its score file)
and, for tasks the paper lacks, to a width that gives a run at least 10 bins; see
dreamerv2_tf/compare.py. Points are plotted at the upper edge of their bin, as in the paper's
files.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from dreamerv2_tf import compare
from dreamerv2_tf.compare import CompareError


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # one line instead of usage + message
    print(f'error: {message} (see --help)', file=sys.stderr)
    sys.exit(2)


def _positive_frames(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = float('nan')
  if not (value > 0 and value != float('inf')):
    raise argparse.ArgumentTypeError(f'{text!r} is not allowed: give a positive number of '
                                     f'frames, e.g. 1e6')
  return value


def _group(text: str) -> tuple[str | None, Path]:
  """`LABEL=PATH` or `PATH` (a path with `=` in it needs a label: `runs=a=b`)."""
  label, sep, path = text.partition('=')
  if sep and label and '/' not in label:
    return label, Path(path)
  return None, Path(text)


def _names(text: str) -> list[str]:
  return [name.strip() for name in text.split(',') if name.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
  parser = _Parser(description=__doc__.split('\n')[0])
  parser.add_argument('--indir', nargs='+', required=True, type=_group,
                      help='run logdirs, or folders searched for them; LABEL=PATH names a group')
  parser.add_argument('--outdir', required=True, type=Path, help='where PNGs and summary go')
  parser.add_argument('--scores', nargs='+', type=Path, default=[],
                      help="the paper's score files, e.g. atari-dreamerv2.json")
  parser.add_argument('--bins', type=_positive_frames, default=None,
                      help="bin width in frames (default: the paper's for the task)")
  parser.add_argument('--baselines', type=Path, default=None,
                      help='baselines.json (default: the one beside the first --scores file)')
  parser.add_argument('--show-baselines', type=_names, default=[],
                      help='comma-separated baseline names drawn as horizontal lines')
  parser.add_argument('--method', default='dreamerv2', help='method in the score files')
  parser.add_argument('--frames', type=_positive_frames, default=None,
                      help="x axis up to these frames, e.g. 1e5 for a run still on its way "
                           "there (default: where the runs end)")
  return parser.parse_args(argv)


def _baselines(args: argparse.Namespace) -> dict[str, dict[str, float]]:
  if not args.show_baselines:
    return {}
  path = args.baselines
  if path is None and args.scores and (args.scores[0].parent / 'baselines.json').exists():
    path = args.scores[0].parent / 'baselines.json'
  if path is None:
    raise CompareError('--show-baselines needs --baselines FILE (the paper\'s baselines.json)')
  baselines = compare.load_baselines(path)
  known = sorted({name for scores in baselines.values() for name in scores})
  unknown = [name for name in args.show_baselines if name not in known]
  if unknown:
    raise CompareError(f'--show-baselines: unknown name {unknown[0]!r}; allowed: '
                       f'{", ".join(known)}')
  return baselines


PAPER_COLOR = '#377eb8'
GROUP_COLORS = ('#e41a1c', '#4daf4a', '#984ea3', '#ff7f00', '#a65628')


def plot_task(path: Path, task: str, groups: dict[str, list], bins: float, paper: list,
              method: str, lines: dict[str, float], frames: float | None = None) -> np.ndarray:
  """Draws one task: each group's mean and min-max band over seeds, the paper's likewise, and
  horizontal lines for other agents' final scores, up to `frames` (default: where the runs
  end). Writes the PNG atomically; returns the frames at which the paper's curve is drawn."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from matplotlib.ticker import FuncFormatter

  fig, ax = plt.subplots(figsize=(7, 4.5))
  curves = {label: compare.task_curve(runs, bins) for label, runs in groups.items()}
  # A run far shorter than the paper's would be a sliver: show the paper up to the runs' frames.
  ends = [c[0][-1] for c in curves.values() if len(c[0])]
  right = frames or (max(ends) if ends else None)
  right = right * 1.05 if right else None
  pxs = np.zeros(0)
  if paper:
    pxs = np.unique(np.concatenate([c[0] for c in paper]))
    pxs = pxs[pxs <= right] if right else pxs
    pmean, plow, phigh, _ = compare.paper_at(paper, pxs)
    _curve(ax, pxs, pmean, plow, phigh, PAPER_COLOR,
           f'paper {method}: mean, min-max of {len(paper)} seeds')
  for index, (label, (xs, mean, low, high, _)) in enumerate(curves.items()):
    runs = groups[label]
    spread = f'mean, min-max of {len(runs)} seeds' if len(runs) > 1 else '1 seed'
    done = compare.finished(runs, xs)
    if not done.all():
      spread += '; dashed, hollow: bin not finished'
    _curve(ax, xs, mean, low, high, GROUP_COLORS[index % len(GROUP_COLORS)],
           f'{label}: {spread}', done)
  for index, (name, score) in enumerate(sorted(lines.items())):
    ax.axhline(score, ls='--', lw=1, color=('#222222', '#777777', '#aaaaaa')[index % 3],
               label=name)
  ax.set_xlim(0, right)
  ax.set_title(f'{task} (bins of {compare.frames_label(bins)} frames, plotted at their end)',
               fontsize='medium')
  ax.set_xlabel('environment frames')
  ax.set_ylabel('evaluation return')
  ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: compare.frames_label(x)))
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize='small', loc='best')
  fig.tight_layout()
  try:
    _atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
  finally:
    plt.close(fig)
  return pxs


def _atomic_write(path: Path, write) -> None:
  """Writes through `write(file)` into a temporary file beside `path`, then renames it over
  `path`, so that a reader never sees a half-written file."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def _curve(ax, xs, mean, low, high, color: str, label: str, done=None) -> None:
  """Mean line and min-max band; bins not `done` (the run has not reached their end) are
  drawn hollow, joined by a dashed line."""
  keep = np.isfinite(mean)
  done = np.ones(len(xs), bool) if done is None else np.asarray(done, bool)
  xs, mean, low, high, done = xs[keep], mean[keep], low[keep], high[keep], done[keep]
  if len(xs) == 0:
    return
  face = np.where(done, color, 'white')
  if len(xs) == 1:  # a band needs two points: show the seeds' spread as an error bar
    ax.errorbar(xs, mean, yerr=[mean - low, high - mean], fmt='o', color=color, capsize=4,
                mfc=face[0], label=label)
    return
  ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
  # The bins are contiguous and a run ends in its last ones: solid up to the last finished bin.
  cut = max(int(done.sum()), 1)
  ax.plot(xs[:cut], mean[:cut], color=color, label=label)
  if cut < len(xs):
    ax.plot(xs[cut - 1:], mean[cut - 1:], color=color, ls='--')
  if len(xs) <= 30:
    ax.scatter(xs, mean, s=16, color=face, edgecolors=color, zorder=3)


def main(argv: list[str] | None = None) -> int:
  args = parse(argv)
  try:
    for _, indir in args.indir:
      if not indir.is_dir():
        raise CompareError(f'--indir {str(indir)!r} is not a directory (give run logdirs or '
                           f'folders holding them)')
    # Check the cheap arguments first, so that a bad one is the only line printed.
    scores = compare.load_scores(args.scores, args.method) if args.scores else {}
    baselines = _baselines(args)
    try:
      args.outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise CompareError(f'--outdir {str(args.outdir)!r} cannot be created: {e.strerror}')
    groups = {}
    for label, indir in args.indir:
      groups.setdefault(label or 'this run', []).extend(compare.find_runs([indir]))
    if not any(groups.values()):
      raise CompareError(f'no runs found under {", ".join(str(d) for _, d in args.indir)}: no '
                         f'folder there holds a metrics.jsonl')
    summaries = {label: compare.table(runs, scores, args.bins) for label, runs in groups.items()}
    if not args.scores:
      print('no --scores given: plotting the runs without the paper\'s curves')
    tasks = {task: info for s in summaries.values() for task, info in s['tasks'].items()}
    for task, info in tasks.items():
      if args.scores and task not in scores:
        print(f'{task}: not in the paper\'s scores; plotted without the paper\'s curve')
      if not any(s['tasks'].get(task, {}).get('evaluations') for s in summaries.values()):
        print(f'{task}: the runs have no eval_return yet')
      lines = {n: baselines[task][n] for n in args.show_baselines if n in baselines.get(task, {})}
      path = args.outdir / (re.sub(r'[^\w.-]+', '_', task) + '.png')
      task_groups = {label: [r for r in runs if r.task == task] for label, runs in groups.items()}
      plot_task(path, task, {k: v for k, v in task_groups.items() if v}, info['bins'],
                scores.get(task, []), args.method, lines, args.frames)
    labelled = any(label for label, _ in args.indir)
    for label, summary in summaries.items():
      print(f'\n== {label} ==' if labelled else '')
      print(compare.format_table(summary), end='')
    summary = {'groups': summaries} if labelled else summaries['this run']
    text = json.dumps(summary, indent=1, allow_nan=False) + '\n'
    _atomic_write(args.outdir / 'summary.json', lambda f: f.write(text.encode()))
    print(f'\nwrote {len(tasks)} plot(s) and summary.json to {args.outdir}')
  except (CompareError, OSError) as e:
    message = str(e) if isinstance(e, CompareError) else f'{e.strerror or e}: {e.filename!r}'
    print(f'error: {message}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
