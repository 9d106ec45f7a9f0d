"""Train DreamerV2.

  python scripts/train.py --configs atari --task pong
  python scripts/train.py --configs dmc_vision --task walker_walk --logdir ~/logdir/walker
  python scripts/train.py --configs atari debug --task pong --steps 2000     # smoke run

Any config key can be overridden with dotted names (`--rssm.deter 200`). Rerunning the same
command with the same `--logdir` resumes the run. Ctrl-C saves a checkpoint and stops.
"""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.config import load_config, main_guard  # noqa: E402


def main(argv=None):
  config = load_config(argv=sys.argv[1:] if argv is None else argv)
  from dreamerv2_tf.loop import train
  train(None, config)


if __name__ == '__main__':
  main_guard(main)
