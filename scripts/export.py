"""Export a trained run's policy as a TensorFlow SavedModel.

  python scripts/export.py --logdir LOGDIR --out DIR [--checkpoint 250000] [--force]

The SavedModel loads with TensorFlow alone (`tf.saved_model.load(DIR)`); its signatures are
`initial_state`, `step` (the deterministic eval policy) and `step_sample`; see
`dreamerv2_tf/export.py` and `examples/play_savedmodel.py`. `saved_model_cli show --dir DIR --all`
describes them.
"""
import argparse
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.errors import main_guard  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--checkpoint', default=None, help='number or path; default: the latest')
  parser.add_argument('--force', action='store_true', help='replace an existing --out')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from dreamerv2_tf.export import export
  out = export(args.logdir, args.out, args.checkpoint, args.force)
  print(f'Exported the policy to {out}')


if __name__ == '__main__':
  main_guard(main)
