"""Compare training runs with the DreamerV2 paper's published score curves.

  runs = find_runs(['logdir'])                     # every folder holding a metrics.jsonl
  scores = load_scores('atari-dreamerv2.json')     # {task: [(xs, ys) per paper seed]}
  summary = table(runs, scores)                    # rows per task and bin, Atari aggregate
  print(format_table(summary))

Binning follows the paper's score files and the plotting code that made them: bin i holds the
evaluation returns at frames in the half-open interval (i * bins, (i + 1) * bins], is labelled
with its upper edge (i + 1) * bins, and its value is the mean of those returns. The paper's Atari
files therefore start at x = 1e6 and end at x = 2e8. Consequences worth knowing:
  - an evaluation at frame 0 (the untrained agent) falls in no bin, as in the paper's curves;
  - the first bin holds the episode of the random policy that the paper's train.py plays in
    the eval env after the prefill and logs as eval_return (ours: eval_random_return);
  - an evaluation exactly at 1e6 frames belongs to the bin labelled 1e6, one just after it to 2e6;
  - bins without evaluations are left out (the paper's files have none);
  - unlike the paper's code, a last bin the run has not completed is kept (labelled with its
    upper edge), so that short runs with only a few evaluations still give a point; such a bin
    is marked as not finished (`finished` in the rows, `*` in the table, hollow in the plots).
Curves of several seeds are combined per bin over the seeds present in that bin (mean, min, max).
The paper's values at a run's frames interpolate each paper seed's curve there (exact when the
bin widths agree) and combine the paper seeds whose curve covers that frame.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ruamel.yaml import YAML

from dreamerv2_tf.logger import read_metrics
from dreamerv2_tf.reference_scores import REFERENCE, gamer_normalized, record_normalized

__all__ = ['CompareError', 'Run', 'find_runs', 'bin_curve', 'combine', 'paper_at', 'load_scores',
           'load_baselines', 'default_bins', 'finished', 'table', 'format_table']

DOMAINS = ('atari_', 'dmc_', 'crafter_', 'gym_')  # prefixes that make a folder name a task name
DEFAULT_BINS = 1e6
DMC_BINS = 3e4  # Every task of the paper's dmc-vision-dreamerv2.json.
Curve = tuple[np.ndarray, np.ndarray]


class CompareError(ValueError):
  """Bad input: a missing directory, an unreadable or malformed score file. One-line message."""


@dataclass
class Run:
  """One training run: its evaluation returns (`returns`) at environment frames (`steps`);
  `frames`: the last frame it logged anything at (how far it has run)."""
  task: str
  seed: str
  path: Path
  steps: np.ndarray
  returns: np.ndarray
  frames: float = 0.0


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def find_runs(indirs: Iterable[str | os.PathLike], key: str = 'eval_return',
              warn: Callable[[str], None] = _warn) -> list[Run]:
  """Every directory under `indirs` (themselves included) that holds a `metrics.jsonl`.

  Task and seed come from the run's `config.yaml` (`task`, `seed`). Without them the task is
  the folder's name, or its parent's when only that looks like a task (`logdir/atari_pong/<time>`),
  and the seed is the folder's name. For `eval_return` the random-policy episode after the
  prefill (`eval_random_return`) counts as an evaluation, as in the paper's files. Lines that
  are not JSON objects, or whose `step` / `key`
  is not a finite number, are skipped with one warning per file.
  """
  runs, seen = [], set()
  for indir in indirs:
    indir = Path(indir)
    if not indir.is_dir():
      raise CompareError(f'indir {str(indir)!r} is not a directory (expected a run logdir or a '
                         f'folder of them)')
    for metrics in sorted(indir.rglob('metrics.jsonl')):
      folder = metrics.parent.resolve()
      if folder in seen or not metrics.is_file():
        continue
      seen.add(folder)
      config = _read_config(metrics.parent / 'config.yaml', warn)
      task = config.get('task')
      if not isinstance(task, str) or not task:
        names = [metrics.parent.name, metrics.parent.parent.name]
        task = next((n for n in names if n.startswith(DOMAINS)), names[0])
      seed = str(config['seed']) if config.get('seed') is not None else metrics.parent.name
      # The paper's train.py logs a random-policy episode after the prefill as eval_return, so
      # its curves' first bins hold it; the loop logs it as eval_random_return.
      keys = (key, 'eval_random_return') if key == 'eval_return' else (key,)
      steps, returns, frames = _read_metrics(metrics, keys, warn)
      runs.append(Run(task, seed, metrics.parent, steps, returns, frames))
  return runs


def _read_config(path: Path, warn: Callable[[str], None]) -> dict:
  if not path.exists():
    return {}
  try:
    config = YAML(typ='safe', pure=True).load(path.read_text())
  except Exception as e:  # any YAML or OS error: fall back to the folder name
    warn(f'{path}: unreadable ({type(e).__name__}); taking task and seed from the folder name')
    return {}
  return config if isinstance(config, dict) else {}


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_metrics(path: Path, keys: Sequence[str],
                  warn: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, float]:
  """(frames, values) of the rows that hold one of `keys`, and the last frame of any row; rows
  superseded by a later start of the loop (logger.py) are left out."""
  steps, values, last = [], [], 0.0
  evaluation = all(k.startswith('eval_') for k in keys)  # Evaluations are redone, not resumed.
  try:
    rows, bad = read_metrics(path)
  except OSError as e:
    warn(f'{path}: cannot read ({e.strerror}); the run has no evaluations')
    return np.zeros(0), np.zeros(0), 0.0
  for number, record in rows:
    if record.get('started') is True and _number(record.get('step')):
      # A start of the loop (logger.py): what an earlier process logged past its checkpoint's
      # frame, and evaluations the checkpoint does not record as finished, are logged again.
      keep = float(record['step'])
      if evaluation:
        done = record.get('evaluated')
        keep = min(keep, float(done) if _number(done) else 0.0)
      kept = [(s, v) for s, v in zip(steps, values) if s <= keep]
      steps, values = [s for s, _ in kept], [v for _, v in kept]
      last = float(record['step'])
      continue
    if _number(record.get('step')):
      last = max(last, float(record['step']))
    key = next((k for k in keys if k in record), None)
    if key is not None:
      if _number(record.get('step')) and _number(record[key]):
        steps.append(float(record['step']))
        values.append(float(record[key]))
      else:
        bad.append(number)
  if bad:
    bad.sort()
    shown = ', '.join(map(str, bad[:5])) + (', ...' if len(bad) > 5 else '')
    warn(f'{path}: skipped {len(bad)} unreadable line(s): {shown}')
  return np.array(steps), np.array(values), last


def bin_curve(steps: Sequence[float], values: Sequence[float],
              bins: float = DEFAULT_BINS) -> Curve:
  """Mean of `values` per bin of `bins` frames: bin i covers (i*bins, (i+1)*bins], x = (i+1)*bins.

  Returns (xs, ys) for the bins that hold at least one value, ascending. Frames <= 0 are in no
  bin, matching the paper's files (see the module docstring).
  """
  if not (_number(bins) and bins > 0):
    raise CompareError(f'bins must be a positive number of frames, got {bins!r}')
  steps, values = np.asarray(steps, float), np.asarray(values, float)
  keep = (steps > 0) & np.isfinite(steps) & np.isfinite(values)
  steps, values = steps[keep], values[keep]
  index = np.ceil(steps / bins).astype(np.int64) - 1
  # Guard against rounding in steps / bins: the bin must satisfy lower < step <= upper.
  index = np.where(index * bins >= steps, index - 1, index)
  index = np.where((index + 1) * bins < steps, index + 1, index)
  labels, inverse = np.unique(index, return_inverse=True)
  sums = np.bincount(inverse, weights=values, minlength=len(labels))
  counts = np.bincount(inverse, minlength=len(labels))
  return (labels + 1) * float(bins), sums / np.maximum(counts, 1)


def combine(curves: Sequence[Curve]) -> tuple[np.ndarray, ...]:
  """Per x over the seeds that have that x: (xs, mean, min, max, number of seeds)."""
  xs = np.unique(np.concatenate([np.asarray(c[0], float) for c in curves] or [np.zeros(0)]))
  table = np.full((len(xs), max(len(curves), 1)), np.nan)
  for column, (cx, cy) in enumerate(curves):
    table[np.searchsorted(xs, cx), column] = cy
  return (xs, *_stats(table))


def paper_at(curves: Sequence[Curve], xs: Sequence[float]) -> tuple[np.ndarray, ...]:
  """The paper's (mean, min, max, number of seeds) at frames `xs`.

  Each seed's curve is linearly interpolated at xs, but only within the frames it covers (no
  extrapolation), so a seed that stopped early does not count for later frames.
  """
  xs = np.asarray(xs, float)
  table = np.full((len(xs), max(len(curves), 1)), np.nan)
  for column, (cx, cy) in enumerate(curves):
    cx, cy = np.asarray(cx, float), np.asarray(cy, float)
    if len(cx):
      inside = (xs >= cx[0]) & (xs <= cx[-1])
      table[inside, column] = np.interp(xs[inside], cx, cy)
  return _stats(table)


def _stats(table: np.ndarray) -> tuple[np.ndarray, ...]:
  missing = np.isnan(table)
  count = (~missing).sum(1)
  has = count > 0  # rows without any value give NaN, without numpy's empty-slice warnings
  mean = np.where(has, np.where(missing, 0.0, table).sum(1) / np.maximum(count, 1), np.nan)
  low = np.where(has, np.where(missing, np.inf, table).min(1), np.nan)
  high = np.where(has, np.where(missing, -np.inf, table).max(1), np.nan)
  return mean, low, high, count


def _read_json(path: str | os.PathLike, what: str) -> Any:
  try:
    return json.loads(Path(path).read_text())
  except OSError as e:
    raise CompareError(f'{what} file {str(path)!r} cannot be read: {e.strerror}') from None
  except ValueError as e:
    raise CompareError(f'{what} file {str(path)!r} is not valid JSON: {e}') from None


def load_scores(paths: str | os.PathLike | Iterable[str | os.PathLike],
                method: str = 'dreamerv2') -> dict[str, list[Curve]]:
  """The published runs of `method` grouped by task: {task: [(xs, ys) per seed]}.

  Each file is a JSON list of runs {task, method, seed, xs, ys} (the paper's score files).
  Several files add their runs together.
  """
  paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  grouped: dict[str, list[Curve]] = {}
  methods = set()
  for path in paths:
    data = _read_json(path, 'scores')
    valid = isinstance(data, list) and all(
        isinstance(r, dict) and isinstance(r.get('task'), str) and isinstance(r.get('xs'), list)
        and isinstance(r.get('ys'), list) and len(r['xs']) == len(r['ys']) for r in data)
    if not valid:
      raise CompareError(f'scores file {str(path)!r} is not a list of runs '
                         f'{{task, method, seed, xs, ys}} with xs and ys of equal length')
    for run in data:
      methods.add(str(run.get('method')))
      if run.get('method') == method:
        xs, ys = np.asarray(run['xs'], float), np.asarray(run['ys'], float)
        order = np.argsort(xs, kind='stable')
        grouped.setdefault(run['task'], []).append((xs[order], ys[order]))
  if paths and not grouped:
    raise CompareError(f'method {method!r} has no runs in the scores files; they hold: '
                       f'{", ".join(sorted(methods)) or "no runs"}')
  return grouped


def load_baselines(path: str | os.PathLike) -> dict[str, dict[str, float]]:
  """Final scores of other agents: {task: {baseline_name: score}} (the paper's baselines.json)."""
  data = _read_json(path, 'baselines')
  valid = isinstance(data, dict) and all(
      isinstance(v, dict) and all(_number(s) for s in v.values()) for v in data.values())
  if not valid:
    raise CompareError(f'baselines file {str(path)!r} is not a mapping {{task: {{name: score}}}}')
  return data


def default_bins(task: str, scores: Mapping[str, list[Curve]] | None = None,
                 frames: float = 0.0) -> float:
  """The paper's bin width for `task`: the spacing of its published xs; without them, 1e6
  frames for Atari and 3e4 for DeepMind Control (the paper's files). For other tasks the
  largest of 1e6, 1e5, 1e4, 1e3 frames that splits a run of `frames` into at least 10 bins, so
  that short runs still give a curve."""
  for xs, _ in (scores or {}).get(task, []):
    if len(xs) >= 2 and xs[1] > xs[0]:
      return float(xs[1] - xs[0])
  if task.startswith('atari_'):
    return DEFAULT_BINS
  if task.startswith('dmc_'):
    return DMC_BINS
  return next((b for b in (1e6, 1e5, 1e4) if frames >= 10 * b), 1e3)


def task_curve(runs: Sequence[Run], bins: float) -> tuple[np.ndarray, ...]:
  """This task's runs binned and combined over seeds: (xs, mean, min, max, seeds)."""
  return combine([bin_curve(r.steps, r.returns, bins) for r in runs])


def finished(runs: Sequence[Run], xs: Sequence[float]) -> np.ndarray:
  """Per bin (labelled by its upper edge in `xs`): whether every run has run past its end."""
  reached = min((max(r.frames, r.steps.max(initial=0)) for r in runs), default=0.0)
  return np.asarray(xs, float) <= reached


def _value(x: Any) -> float | None:
  return float(x) if math.isfinite(x) else None  # JSON has no NaN


def _frames_value(x: float) -> int | float:
  return int(x) if float(x).is_integer() else float(x)


def table(runs: Sequence[Run], scores: Mapping[str, list[Curve]] | None = None,
          bins: float | None = None) -> dict:
  """Summary of `runs` against the paper: {'tasks': {...}, 'rows': [...], 'aggregate': ...}.

  One row per task and bin: frames, this run's mean/min/max return over seeds, the paper's
  mean/min/max at the same frames and the gamer-normalized scores of both. `bins=None` takes the
  paper's bin width per task (default_bins). With two or more Atari tasks, `aggregate` holds the
  paper's summary statistics over the tasks' final (last bin) scores: median and mean of the
  gamer-normalized score and mean of the clipped record-normalized score; `paper` has the same
  for the paper's curves at each task's same final frames.
  """
  scores = scores or {}
  tasks, rows, finals = {}, [], {}
  for task in sorted({r.task for r in runs}):
    mine = [r for r in runs if r.task == task]
    width = bins or default_bins(task, scores, max(r.steps.max(initial=0) for r in mine))
    xs, mean, low, high, seeds = task_curve(mine, width)
    paper = scores.get(task, [])
    pmean, plow, phigh, pseeds = paper_at(paper, xs)
    tasks[task] = dict(seeds=sorted(r.seed for r in mine), bins=_frames_value(width),
                       paper_seeds=len(paper), evaluations=sum(len(r.steps) for r in mine))
    done = finished(mine, xs)
    for i, x in enumerate(xs):
      rows.append(dict(
          task=task, frames=_frames_value(x), finished=bool(done[i]), seeds=int(seeds[i]),
          return_mean=_value(mean[i]),
          return_min=_value(low[i]), return_max=_value(high[i]), paper_seeds=int(pseeds[i]),
          paper_mean=_value(pmean[i]), paper_min=_value(plow[i]), paper_max=_value(phigh[i]),
          gamer_normalized=gamer_normalized(task, mean[i]),
          paper_gamer_normalized=gamer_normalized(task, pmean[i])))
    if len(xs) and task in REFERENCE:
      finals[task] = rows[-1]
  return dict(tasks=tasks, rows=rows, aggregate=_aggregate(finals) if len(finals) >= 2 else None)


def _aggregate(finals: Mapping[str, dict]) -> dict:
  def stats(key: str) -> dict:
    tasks = [t for t, row in finals.items() if row[key] is not None]
    gamer = [gamer_normalized(t, finals[t][key]) for t in tasks]
    record = [record_normalized(t, finals[t][key]) for t in tasks]
    return dict(tasks=len(tasks),
                gamer_median=float(np.median(gamer)) if tasks else None,
                gamer_mean=float(np.mean(gamer)) if tasks else None,
                record_clipped_mean=float(np.mean(record)) if tasks else None)
  return dict(stats('return_mean'), frames={t: row['frames'] for t, row in finals.items()},
              paper=stats('paper_mean'))


def _fmt(value: Any, digits: int = 2) -> str:
  if value is None:
    return '-'
  return f'{value:.0f}' if abs(value) >= 1e4 else f'{float(value):.{digits}f}'


def frames_label(x: float) -> str:
  """Frames as a short label: 30k, 1.5M, 200M."""
  for scale, unit in ((1e6, 'M'), (1e3, 'k')):
    if abs(x) >= scale:
      return f'{x / scale:g}{unit}'
  return f'{x:g}'


def _columns(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
  widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
  return ['  '.join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *lines]]


def format_table(summary: Mapping) -> str:
  """The summary as plain-text tables: one per task, then the Atari aggregate if any."""
  out = []
  header = ('frames', 'seeds', 'return', 'min', 'max', 'paper', 'p.min', 'p.max', 'p.seeds',
            'gamer-norm', 'p.gamer-norm')
  for task, info in summary['tasks'].items():
    rows = [r for r in summary['rows'] if r['task'] == task]
    out.append(f'{task}: {len(info["seeds"])} seed(s), bins of {frames_label(info["bins"])} '
               f'frames, paper: {info["paper_seeds"] or "no"} seed(s)')
    lines = [(frames_label(r['frames']) + ('' if r.get('finished', True) else '*'),
              str(r['seeds']), _fmt(r['return_mean']),
              _fmt(r['return_min']), _fmt(r['return_max']), _fmt(r['paper_mean']), _fmt(r['paper_min']),
              _fmt(r['paper_max']), str(r['paper_seeds']), _fmt(r['gamer_normalized'], 3),
              _fmt(r['paper_gamer_normalized'], 3)) for r in rows]
    out += ['  ' + line for line in _columns(header, lines)] if lines else [
        '  no evaluation returns after frame 0']
    if any(not r.get('finished', True) for r in rows):
      out.append("  * not finished: a run has not reached the end of this bin, which holds "
                 "only part of its evaluations")
    out.append('')
  agg = summary.get('aggregate')
  if agg:
    out.append(f'aggregate over {agg["tasks"]} Atari tasks (final bin of each task):')
    lines = [(name, str(s['tasks']), _fmt(s['gamer_median'], 3), _fmt(s['gamer_mean'], 3),
              _fmt(s['record_clipped_mean'], 3)) for name, s in (('this run', agg),
                                                                  ('paper', agg['paper']))]
    out += ['  ' + line for line in _columns(
        ('', 'tasks', 'gamer median', 'gamer mean', 'clipped record mean'), lines)]
  return '\n'.join(out).rstrip('\n') + '\n'

