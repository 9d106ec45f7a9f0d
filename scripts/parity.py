"""Numerical parity with the paper's own code: the same numbers on the same weights and batch.

Builds our float32 agent and the paper's (`dreamerv2==2.2.0`, each in its own process), copies
our weights into the paper's layers, replaces every sample by its mode on both sides and
compares, per configuration: encoder, decoder, RSSM states, world-model losses and gradients,
imagination, lambda-returns, actor and critic losses and gradients, and one whole train step;
in the exploration configurations, the behaviour against the paper's expl.py (the ensemble's
loss and gradient, the disagreement and normalised rewards, its actor-critic, one update).
Prints a table (quantity, configuration, max abs diff, max rel diff, tolerance, pass) and exits
with status 1 if a row fails. See docs/parity.md.

  .venv/bin/python scripts/parity.py                     # every configuration (minutes)
  .venv/bin/python scripts/parity.py --cases atari gaussian --markdown
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

# The harness is a test package of this repository (tests/reference), not part of dreamerv2_tf.
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reference import cases as cases_lib  # noqa: E402
from tests.reference import compare  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog='configurations: ' + '; '.join(f'{c.name}: {c.what}' for c in cases_lib.CASES))
  parser.add_argument('--cases', nargs='+', default=[c.name for c in cases_lib.CASES],
                      choices=list(cases_lib.BY_NAME), metavar='CASE',
                      help='configurations to compare (default: all)')
  parser.add_argument('--workdir', type=pathlib.Path, default=None,
                      help='keep both sides\' outputs here (default: a temporary folder)')
  parser.add_argument('--reuse', action='store_true',
                      help='compare the outputs already in --workdir without running the sides')
  parser.add_argument('--adam', choices=('legacy', 'new'), default='legacy',
                      help="the paper's Adam: legacy = OptimizerV2, which the paper ran on "
                           "(default); new = tf_keras 2.21's tf.optimizers.Adam")
  parser.add_argument('--markdown', action='store_true', help='print the table as markdown')
  parser.add_argument('--verbose', action='store_true',
                      help='name the tensor with the largest relative difference of each row')
  args = parser.parse_args(argv)
  if args.reuse and args.workdir is None:
    parser.error('--reuse needs --workdir')
  try:
    with tempfile.TemporaryDirectory(prefix='parity-') as tmp:
      workdir = args.workdir or pathlib.Path(tmp)
      if not args.reuse:
        compare.run_sides(workdir, args.cases, args.adam)
      rows = compare.compare(workdir, args.cases)
  except compare.SetupError as e:
    print(f'parity: {e}', file=sys.stderr)
    return 2
  print(compare.format_table(rows, args.markdown))
  if args.verbose:
    for row in rows:
      print(f'{row.case:>14}  {row.quantity}: {row.worst}')
  failed = compare.failures(rows)
  print(f'\n{len(rows) - len(failed)} of {len(rows)} rows pass (or are explained: docs/parity.md); '
        f'tolerance {cases_lib.TOLERANCE:.0e} (max|ours - paper| / max|paper| per tensor).')
  for line in failed:
    print('FAIL', line)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
