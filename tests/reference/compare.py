"""Runs both sides of the parity harness and compares their quantities name by name.

A row of the table is one group of quantities (e.g. every RSSM state over `observe`) in one
case: the largest absolute difference over the group's tensors, and the largest relative one,
max|ours - paper| / max|paper| per tensor. A row passes if that is at most `TOLERANCE`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np

from tests.reference.cases import BY_NAME, CHANGED, EXPL_BEHAVIORS, TOLERANCE, changed_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL = f'{sys.executable} -m pip install --no-deps dreamerv2==2.2.0'

# (row label, regex of quantity names), in table order; every name must fall in one group.
GROUPS = (
    ('encoder embedding', r'embed$'),
    ('decoder means', r'decoder/'),
    ('observe: posterior states', r'post/'),
    ('observe: prior states', r'prior/'),
    ('imagine: open-loop priors', r'openl/'),
    ('loss: image / vector', r'loss/(image|vector)$'),
    ('loss: reward', r'loss/reward$'),
    ('loss: discount', r'loss/discount$'),
    ('loss: kl', r'loss/kl$'),
    ('loss: model (total)', r'loss/model$'),
    ('model metrics (model_kl, entropies)', r'wm_metric/'),
    ('model loss gradient, every weight', r'grad_model/'),
    ('KL variants (balance, free nats, free_avg): loss', r'kl\[.*/loss$'),
    ('KL variants: gradient w.r.t. post and prior', r'kl\[.*/grad_'),
    ('imagined trajectory from every posterior',
     r'imag/(deter|stoch|logits|mean|std|feat|action)$'),
    ('imagined discounts and weights', r'imag/(discount|weight)$'),
    ('imagined rewards, slow-critic values', r'imag/(reward|value)$'),
    ('lambda-returns (slow critic)', r'imag/target$'),
    ('actor loss: reinforce', r'actor_reinforce/(loss|metric/)'),
    ('actor gradient: reinforce', r'actor_reinforce/grad/'),
    ('actor loss: dynamics', r'actor_dynamics/(loss|metric/)'),
    ('actor gradient: dynamics', r'actor_dynamics/grad/'),
    ('actor loss: both (schedule)', r'actor_both/(loss|metric/)'),
    ('actor gradient: both (schedule)', r'actor_both/grad/'),
    ('critic loss', r'critic/(loss|metric/)'),
    ('critic gradient', r'critic/grad/'),
    ('train step: every weight after', r'train_weight/'),
    ('train step: Adam slots after', r'train_slot/'),
    ('train step: metrics', r'train_metric/'),
)

# The exploration cases' groups (expl_ours.py says what each quantity is).
EXPL_GROUPS = (
    ('exploration: ensemble / head loss', r'expl_loss/loss$'),
    ('exploration: ensemble / head loss gradient', r'expl_loss/grad/'),
    ('exploration: imagined trajectory (its actor)', r'expl_imag/(feat|action)$'),
    ('exploration: disagreement (intrinsic reward)', r'expl_reward/disag$'),
    ('exploration: normalised intrinsic and task rewards',
     r'expl_reward/(intr_normed|extr|extr_normed)$'),
    ('exploration: mixed reward', r'expl_reward/mixed$'),
    ('exploration: slow-critic values, lambda-returns', r'expl_imag/(value|target)$'),
    ('exploration: actor loss', r'expl_actor/(loss|metric/)'),
    ('exploration: actor gradient', r'expl_actor/grad/'),
    ('exploration: critic loss', r'expl_critic/(loss|metric/)'),
    ('exploration: critic gradient', r'expl_critic/grad/'),
    ('exploration update: every weight after', r'expl_weight/'),
    ('exploration update: Adam slots after', r'expl_slot/'),
    ('exploration update: metrics', r'expl_metric/'),
)

# Our REINFORCE term against the paper's other forms of it, (row label, our quantity prefix,
# the paper's). Both must agree within TOLERANCE (see docs/parity.md): a one-hot action's
# gradient never reaches TFP's OneHotCategorical.log_prob, which stops it itself, and a
# truncated normal's log-density has zero gradient in the action at the mode the harness uses.
VARIANTS = (
    ('actor gradient: reinforce vs paper 2.2.0 form', 'actor_reinforce/grad/',
     'actor_reinforce_2.2.0/grad/'),
    ('actor gradient: both vs paper final form', 'actor_both/grad/', 'actor_both_final/grad/'),
)

# Quantities only one side has, and why.
OURS_ONLY = {
    r'(train|expl)_metric/\w+_skipped_steps$':
        'ours counts updates skipped for non-finite gradients',
    r'diag/': 'the scales of explain_sum (ours only)',
}
PAPER_ONLY = {r'actor_(reinforce_2\.2\.0|both_final)/': 'compared in VARIANTS'}


ADAM_BETA1, ADAM_BETA2 = 0.9, float(np.float32(0.999))  # Both sides' constants (ours.py).


def explain_sum(name: str, diff: np.ndarray, ours) -> str | None:
  """Explains a decoder bias gradient's difference (and its Adam slots') as a float32 sum.

  Such a gradient sums dL/dy over every B*T*H*W output position with heavy cancellation; the
  rounding of a float32 sum is bounded relative to the sum of the terms' magnitudes. Returns
  the explanation if every element's difference is within TOLERANCE of that scale, else None.
  """
  match = re.match(r'(grad_model|train_slot/m|train_slot/v)/(decoder/conv\d+/bias)$', name)
  if not match or f'diag/abs_sum/{match[2]}' not in ours.files:
    return None
  scale = ours[f'diag/abs_sum/{match[2]}']
  if match[1] == 'train_slot/m':  # m = (1 - beta1) g after one step
    scale = (1 - ADAM_BETA1) * scale
  elif match[1] == 'train_slot/v':  # v = (1 - beta2) g^2: dv = 2 (1 - beta2) |g| dg
    scale = (1 - ADAM_BETA2) * 2 * np.abs(ours[f'grad_model/{match[2]}']) * scale
  rel = float(np.max(diff / scale))
  if rel > TOLERANCE:
    return None
  return f'{name}: a sum over B*T*H*W positions; {rel:.1e} of its sum of |terms|'


# Train-step metrics that average values of both signs, and the compared tensor of those values
# (from the same imagination before the update: the same magnitudes).
MEANS = {'train_metric/critic_slow': 'imag/value', 'train_metric/critic': 'imag/value',
         'train_metric/critic_target': 'imag/target', 'train_metric/reward_mean': 'imag/reward',
         'train_metric/reward_normed_mean': 'imag/reward'}


def explain_mean(name: str, diff: np.ndarray, ours) -> str | None:
  """Explains a metric that is a mean of values of both signs, which can nearly cancel.

  Its rounding is bounded relative to the mean of the values' magnitudes, not to the mean.
  """
  if name not in MEANS:
    return None
  scale = float(np.mean(np.abs(ours[MEANS[name]])))
  rel = float(np.max(diff)) / scale
  if rel > TOLERANCE:
    return None
  return f'{name}: a mean of values of both signs; {rel:.1e} of the mean |value|'


def explain_adam(name: str, ours, paper, inputs, config: dict) -> str | None:
  """Explains a weight's difference after the step by Adam acting on the slots' differences.

  Where |g| is near Adam's epsilon, the first step lr * m / (sqrt(v) + eps) turns a gradient
  difference dg into an update difference of up to lr * dg / eps: large next to weights that
  start at 0 (biases). Explained if each side's weight is exactly the Adam step (with weight
  decay) of its own slots; the slots themselves are compared in their own row.
  """
  match = re.match(r'(train|expl)_weight/(.*)$', name)
  if not match:
    return None
  kind, weight = match[1], match[2]
  top, rest = weight.split('/', 1)
  if top in ('slow_critic', 'expl_slow_critic'):  # Copied from the critic after its first update.
    critic = f'{kind}_weight/{top[:-len("slow_critic")]}critic/{rest}'
    same = all(np.array_equal(side[name], side[critic]) for side in (ours, paper))
    return f'{name}: the critic after the step, on both sides' if same else None
  opt = {'actor': 'actor_opt', 'critic': 'critic_opt', 'expl': 'expl_opt',
         'expl_actor': 'actor_opt', 'expl_critic': 'critic_opt'}.get(top, 'model_opt')
  lr, eps, wd = (float(config[f'{opt}.{k}']) for k in ('lr', 'eps', 'wd'))
  rate = lr * np.sqrt(1 - ADAM_BETA2) / (1 - ADAM_BETA1)
  w0 = inputs[f'w/{weight}'].astype(np.float64)
  worst = 0.0
  for side in (ours, paper):
    m, v = (side[f'{kind}_slot/{k}/{weight}'].astype(np.float64) for k in ('m', 'v'))
    predicted = w0 * (1 - wd) - rate * m / (np.sqrt(v) + eps)
    after = side[name].astype(np.float64)
    worst = max(worst, float(np.max(np.abs(after - predicted)) / np.max(np.abs(after))))
  if worst > TOLERANCE / 10:
    return None
  return f'{name}: each side is the Adam step of its own slots within {worst:.1e}'


@dataclasses.dataclass
class Row:
  quantity: str
  case: str
  abs_diff: float
  rel_diff: float
  tolerance: float
  status: str  # pass, explained (see explain_*), FAIL
  worst: str = ''  # the tensor with the largest relative difference, or the explanation


class SetupError(RuntimeError):
  """The reference or a side of the harness cannot run; the message says what to do."""


def check_reference() -> None:
  """Raises SetupError with the install command if the paper's package is missing."""
  import importlib.util
  spec = importlib.util.find_spec('dreamerv2')
  if spec is None or not spec.submodule_search_locations or not any(
      (pathlib.Path(p) / 'agent.py').exists() for p in spec.submodule_search_locations):
    raise SetupError(f'the paper code (dreamerv2 2.2.0) is not installed: run `{INSTALL}`')


def side_env() -> dict[str, str]:
  """The environment of a side's process (ours or the paper's) for every launcher here: the
  repository importable, both sides on the same kernels whatever each imports first
  (docs/parity.md, "Both sides on the same kernels"), and no tf_keras switch inherited (the
  paper's side sets its own)."""
  from dreamerv2_tf import onednn
  path = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)
  env = {**os.environ, **onednn.child_env(), 'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONPATH': path}
  env.pop('TF_USE_LEGACY_KERAS', None)
  return env


def run_sides(workdir: pathlib.Path, cases: list[str], adam: str = 'legacy',
              changed: bool = False) -> None:
  """Runs ours.py, then paper.py, each in its own process, for `cases` into `workdir`.

  changed: the paper side also runs `cases.CHANGED`, cases among `cases` with settings
  changed, on the same weights and batch (folders named by `cases.changed_name`).
  """
  check_reference()
  env = side_env()
  sides = (('tests.reference.ours', []), ('tests.reference.paper', [f'--adam={adam}']))
  for module, extra in sides:
    names = list(cases)
    if module.endswith('paper') and changed:
      names += [write_changed(workdir, *change) for change in CHANGED if change[0] in cases]
    proc = subprocess.run([sys.executable, '-m', module, *extra, str(workdir), *names],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
      tail = proc.stderr.strip().splitlines()[-25:]
      raise SetupError(f'{module} failed (exit {proc.returncode}):\n' + '\n'.join(tail))


def write_changed(workdir: pathlib.Path, case: str, changes: dict) -> str:
  """A folder for the paper side: `case`'s weights and batch, its config with `changes`."""
  name = changed_name(case, changes)
  (workdir / name).mkdir(exist_ok=True)
  spec = json.loads((workdir / case / 'case.json').read_text())
  unknown = sorted(set(changes) - set(spec['config']))
  if unknown:
    raise SetupError(f'{name}: no config keys {unknown} in case {case}')
  spec['config'].update(changes)
  (workdir / name / 'case.json').write_text(json.dumps(spec, indent=1))
  shutil.copyfile(workdir / case / 'inputs.npz', workdir / name / 'inputs.npz')
  return name


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size == 0:
    return 0.0, 0.0
  diff = float(np.max(np.abs(a - b)))
  scale = float(np.max(np.abs(b)))
  return diff, (diff / scale if scale > 0 else (0.0 if diff == 0 else float('inf')))


def groups(config: dict) -> tuple:
  """The groups of a case: the agent's, or (exploration cases) the behaviour's."""
  return EXPL_GROUPS if config['expl_behavior'] in EXPL_BEHAVIORS else GROUPS


def expected_rows(config: dict) -> set[str]:
  """The row labels a case of this config must have (given its case.json config)."""
  if config['expl_behavior'] in EXPL_BEHAVIORS:
    want = {label for label, _ in EXPL_GROUPS}
    if config['expl_behavior'] != 'plan2explore':  # Neither disagreement nor normalisers.
      want -= {'exploration: disagreement (intrinsic reward)',
               'exploration: normalised intrinsic and task rewards'}
    return want
  want = {label for label, _ in GROUPS} | {label for label, *_ in VARIANTS}
  if not config['pred_discount']:
    want.remove('loss: discount')
  return want


def compare_case(case_dir: pathlib.Path, paper_dir: pathlib.Path | None = None) -> list[Row]:
  """The table rows of one case directory holding ours.npz and paper.npz.

  paper_dir: take paper.npz from another case's directory (the harness's own test: two
  configurations that differ must not compare equal).
  """
  case = case_dir.name
  ours, paper = np.load(case_dir / 'ours.npz'), np.load((paper_dir or case_dir) / 'paper.npz')
  inputs = np.load(case_dir / 'inputs.npz')
  config = json.loads((case_dir / 'case.json').read_text())['config']
  rows, seen = [], set()
  for label, pattern in groups(config):
    names = [n for n in ours.files if re.match(pattern, n)]
    seen.update(names)
    if not names:
      continue
    worst, abs_max, rel_max, unexplained, explained = '', 0.0, 0.0, 0.0, []
    for name in names:
      if name not in paper.files and any(re.match(p, name) for p in OURS_ONLY):
        continue
      if name not in paper.files:
        rows.append(Row(label, case, float('nan'), float('nan'), TOLERANCE, 'FAIL',
                        f'{name}: not computed by the paper side'))
        continue
      if ours[name].shape != paper[name].shape:
        rows.append(Row(label, case, float('nan'), float('nan'), TOLERANCE, 'FAIL',
                        f'{name}: shape {ours[name].shape} vs paper {paper[name].shape}'))
        continue
      diff, rel = _diff(ours[name], paper[name])
      abs_max, rel_max = max(abs_max, diff), max(rel_max, rel)
      why = None
      if rel > TOLERANCE:
        elementwise = np.abs(ours[name].astype(np.float64) - paper[name].astype(np.float64))
        why = (explain_sum(name, elementwise, ours) or explain_mean(name, elementwise, ours) or
               explain_adam(name, ours, paper, inputs, config))
      if why:
        explained.append(why)
      elif rel >= unexplained:
        worst, unexplained = name, rel
    if unexplained > TOLERANCE:
      status = 'FAIL'
    else:
      status = 'explained' if explained else 'pass'
      worst = '; '.join(explained) or worst
    rows.append(Row(label, case, abs_max, rel_max, TOLERANCE, status, worst))
  for label, ours_prefix, paper_prefix in (VARIANTS if groups(config) is GROUPS else ()):
    pairs = [(n, paper_prefix + n[len(ours_prefix):]) for n in ours.files
             if n.startswith(ours_prefix)]
    missing = [p for _, p in pairs if p not in paper.files]
    if missing or not pairs:
      rows.append(Row(label, case, float('nan'), float('nan'), TOLERANCE, 'FAIL',
                      f'not computed by the paper side: {missing[:1] or paper_prefix}'))
      continue
    diffs = [(_diff(ours[n], paper[p]), n) for n, p in pairs]
    (_, rel), worst = max(diffs, key=lambda d: d[0][1])
    rows.append(Row(label, case, max(d for (d, _), _ in diffs), rel, TOLERANCE,
                    'pass' if rel <= TOLERANCE else 'FAIL', worst))
  for name in ours.files:
    if name not in seen and not any(re.match(p, name) for p in OURS_ONLY):
      rows.append(Row('(ungrouped)', case, float('nan'), float('nan'), TOLERANCE, 'FAIL',
                      f'{name}: in no group of compare.GROUPS'))
  for name in paper.files:
    if name not in ours.files and not any(re.match(p, name) for p in PAPER_ONLY):
      rows.append(Row('(paper only)', case, float('nan'), float('nan'), TOLERANCE, 'FAIL',
                      f'{name}: not computed by our side'))
  return rows


def format_table(rows: list[Row], markdown: bool = False) -> str:
  head = ('quantity', 'configuration', 'max abs diff', 'max rel diff', 'tolerance', 'pass')
  body = [(r.quantity, r.case, f'{r.abs_diff:.2e}', f'{r.rel_diff:.2e}', f'{r.tolerance:.0e}',
           r.status) for r in rows]
  if markdown:
    lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
    lines += ['| ' + ' | '.join(cells) + ' |' for cells in body]
    return '\n'.join(lines)
  widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
  fmt = lambda cells: '  '.join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
  return '\n'.join([fmt(head), fmt(['-' * w for w in widths])] + [fmt(c) for c in body])


def failures(rows: list[Row]) -> list[str]:
  return [f'{r.quantity} [{r.case}]: rel {r.rel_diff:.2e} > {r.tolerance:.0e} ({r.worst})'
          for r in rows if r.status == 'FAIL']


def compare(workdir: pathlib.Path, cases: list[str]) -> list[Row]:
  unknown = [c for c in cases if c not in BY_NAME]
  if unknown:
    raise SetupError(f'unknown cases {unknown}; allowed: {", ".join(BY_NAME)}')
  return [row for case in cases for row in compare_case(workdir / case)]
