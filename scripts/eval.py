"""Evaluate a trained run's checkpoint with the eval policy.

  python scripts/eval.py --logdir LOGDIR [--episodes 10] [--video out.mp4|.gif] [--seed S]
                         [--checkpoint 250000]

Prints per-episode returns, their mean ± std and, for Atari, the human-gamer-normalised score.
Reads the logdir only; it never writes checkpoints, episodes or metrics there.
"""
import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.errors import main_guard  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--episodes', type=int, default=10)
  parser.add_argument('--seed', type=int, default=None)
  parser.add_argument('--checkpoint', default=None, help='number or path; default: the latest')
  parser.add_argument('--video', default=None, help='write the first episode (.mp4 or .gif)')
  parser.add_argument('--json', default=None, help='also write the results as JSON')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from dreamerv2_tf.evaluate import evaluate
  result = evaluate(args.logdir, args.episodes, args.seed, args.checkpoint, args.video)
  if args.json:
    from dreamerv2_tf.files import write_text_atomic
    write_text_atomic(args.json, json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
  main_guard(main)
