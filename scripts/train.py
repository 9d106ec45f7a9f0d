r"""Train DreamerV2.

  python scripts/train.py --configs debug --task gym:CartPole-v1 --steps 20000 '--.*_opt\.lr' 1e-3
  python scripts/train.py --configs atari --task pong
  python scripts/train.py --configs dmc_vision --task walker_walk --logdir ~/logdir/walker
  python scripts/train.py --help [KEY | BLOCK | PRESET]   # every key, its default and meaning

Any config key can be overridden with dotted names (`--rssm.deter 200`). Rerunning the same
command with the same `--logdir` resumes the run. Ctrl-C saves a checkpoint and stops.
"""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf import cli_help  # noqa: E402
from dreamerv2_tf.config import load_config, main_guard  # noqa: E402


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if cli_help.wants_help(argv):
    print(cli_help.render(argv), end='')
    return
  config = load_config(argv=argv)
  print(cli_help.preset_chain(argv), flush=True)
  from dreamerv2_tf.loop import train
  train(None, config)


if __name__ == '__main__':
  main_guard(main)
