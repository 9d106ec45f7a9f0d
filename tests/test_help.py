"""`scripts/train.py --help` (meanings from configs.yaml's comments); the CPU estimate at start."""
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from dreamerv2_tf import cli_help, eta
from dreamerv2_tf.config import ConfigError, load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(ROOT / 'scripts' / 'train.py')]
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}


def train_cli(*args, timeout=120):
  return subprocess.run(TRAIN + list(args), capture_output=True, text=True, timeout=timeout,
                        env=ENV, cwd=ROOT)


def test_every_key_block_and_preset_has_a_meaning():
  comments = cli_help.read_comments()
  keys = load_config().flat
  missing = [k for k in keys if not comments.keys.get(k)]
  assert not missing, f'keys without a comment in configs.yaml: {missing}'
  blocks = {k.rsplit('.', 1)[0] for k in keys if '.' in k}
  assert not [b for b in blocks if not comments.keys.get(b)]
  assert set(comments.keys) == set(keys) | blocks  # nothing stale, nothing from a preset
  presets = [p for p in comments.presets if p != 'defaults']
  assert presets and all(comments.presets[p] for p in presets)
  assert all(comments.sections.get(k) for k in keys)  # every key sits under a heading


def test_read_comments_continuations_quotes_blocks(tmp_path):
  path = tmp_path / 'configs.yaml'
  path.write_text(
      '# header\ndefaults:  # base\n\n  # Run\n'
      "  pattern: 'a#b'   # a regex # with a hash\n"
      '  opt:              # the optimizer\n'
      '    lr: 1e-4        # learning rate\n'
      '                    # (continued)\n'
      '\n  # Agent\n  n: 3  # count\n'
      'tiny:  # small\n  n: 1  # ignored: not defaults\n')
  comments = cli_help.read_comments(path)
  assert comments.keys == {'pattern': 'a regex # with a hash', 'opt': 'the optimizer',
                           'opt.lr': 'learning rate (continued)', 'n': 'count'}
  assert comments.sections == {'pattern': 'Run', 'opt': 'Run', 'opt.lr': 'Run', 'n': 'Agent'}
  assert comments.presets == {'defaults': 'base', 'tiny': 'small'}
  assert load_config(path=path).pattern == 'a#b'


def test_full_help_lists_every_key_with_its_default_and_exits_0():
  for flag in ('-h', '--help'):
    proc = train_cli(flag)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    comments = cli_help.read_comments()
    for key, value in load_config().flat.items():
      row = [line for line in lines if line.split()[:1] == [key]]
      assert len(row) == 1, key
      assert row[0].split()[1] == cli_help._fmt(value).split()[0], row
      assert row[0].rstrip().endswith(comments.keys[key]), row
  for name in ('atari', 'dmc_vision', 'dmc_proprio', 'crafter', 'debug'):
    assert re.search(rf'^  {name} +\S', proc.stdout, re.M), name
  for text in ('gym:CartPole-v1', 'walker_walk', 'pong', 'crafter_reward', "'--.*\\.norm'",
               '--grad_heads decoder,reward', cli_help.QUICK_COMMAND):
    assert text in proc.stdout, text


def test_shown_values_can_be_typed_back():
  # What --help prints for a value, typed on a command line, gives that value again.
  values = load_config(['atari']).flat
  argv = [arg for key, value in values.items()
          for arg in [f'--{key}'] + shlex.split(cli_help._fmt(value))]
  typed = load_config(argv=argv).flat
  assert typed == values, {k: (v, typed[k]) for k, v in values.items() if typed[k] != v}


def test_help_block_key_and_preset():
  proc = train_cli('--help', 'rssm')
  assert proc.returncode == 0, proc.stderr
  assert re.search(r'^  rssm\.deter +1024 +size of the deterministic', proc.stdout, re.M)
  assert all(k in proc.stdout for k in load_config().rssm.flat)
  assert 'kl.free' not in proc.stdout
  assert 'atari: rssm.hidden 600, rssm.deter 600' in proc.stdout
  # Values after the command line's presets and overrides; the default beside them.
  text = cli_help.render(['--configs', 'atari', '--help', 'rssm.deter'])
  assert text.startswith('rssm.deter = 600 (after --configs atari)') and 'default: 1024' in text
  assert 'rssm.deter = 200' in cli_help.render(['--rssm.deter', '200', '--help=rssm.deter'])
  text = cli_help.render(['-h', 'atari'])
  assert re.search(r'^  action_repeat +4 +\(1\)$', text, re.M)
  assert 'seed' not in text  # only what the preset changes


@pytest.mark.parametrize('name,close', [('rssm.detr', 'rssm.deter'), ('deter', 'rssm.deter'),
                                        ('rsm', 'rssm'), ('atary', 'atari')])
def test_unknown_name_is_a_one_line_error_with_the_closest(name, close):
  with pytest.raises(ConfigError, match=re.escape(close)):
    cli_help.render(['--help', name])
  proc = train_cli('--help', name)
  assert proc.returncode == 2 and not proc.stdout
  assert proc.stderr.startswith('error: --help:') and proc.stderr.count('\n') == 1, proc.stderr
  assert close in proc.stderr


def test_help_does_not_import_tensorflow():
  code = ('import sys\nfrom dreamerv2_tf import cli_help\ncli_help.render(["--help"])\n'
          'assert "tensorflow" not in sys.modules\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr


# The CPU estimate printed once the first updates are timed.

class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def feed(estimate, clock, first_seconds, seconds, steps, updates, step=0):
  """Updates every `steps` agent steps from `step`, the first taking first_seconds (tracing)."""
  for i in range(updates):
    clock.now += first_seconds if i == 0 else seconds
    step += steps
    estimate.update(step)
  return step


def test_estimate_at_the_measured_rate_leaves_out_the_traced_update():
  clock, out = Clock(), io.StringIO()
  estimate = eta.RunEstimate(5e7, 4, cpu=True, stream=out, clock=clock)
  # 10 s of prefill before the first update, which traces for 60 s.
  clock.now += 10.0
  step = feed(estimate, clock, 60.0, 3.2, 16, 5)
  assert out.getvalue() == ''  # not yet: 5 updates after the traced one
  feed(estimate, clock, 3.2, 3.2, 16, 40, step)
  text = out.getvalue()
  # 16 agent steps per 3.2 s = 5 steps/s = 20 frames/s; 5e7 steps is 115.7 days.
  assert text.count('CPU estimate') == 1 and 'about 116 days' in text, text
  assert '20.0 frames/s' in text and '200,000,000 frames' in text
  assert cli_help.QUICK_COMMAND in text


def test_estimate_short_run_and_gpu():
  clock, out = Clock(), io.StringIO()
  estimate = eta.RunEstimate(20000, 1, cpu=True, stream=out, clock=clock)
  feed(estimate, clock, 5.0, 0.1, 5, 30)
  # Printed at step 105 (2 s of updates after the traced one): 19,895 steps at 50 steps/s.
  assert 'finishes in about 6.6 minutes' in out.getvalue(), out.getvalue()
  assert 'scripts/train.py' not in out.getvalue()  # a short run needs no other command
  out = io.StringIO()
  feed(eta.RunEstimate(5e7, 4, cpu=False, stream=out, clock=clock), clock, 5.0, 3.0, 16, 50)
  assert out.getvalue() == ''


def test_duration():
  assert eta.duration(45) == 'about 45 seconds'
  assert eta.duration(400) == 'about 6.7 minutes'
  assert eta.duration(5 * 3600) == 'about 5.0 hours'
  assert eta.duration(122 * 86400) == 'about 122 days'


def test_quick_command_is_a_valid_train_command():
  args = shlex.split(cli_help.QUICK_COMMAND)
  assert args[:2] == ['.venv/bin/python', 'scripts/train.py']
  config = load_config(argv=args[2:])
  assert config.task == 'gym:CartPole-v1' and config.steps == 20000
  # The README's quickstart is the command the help and the CPU estimate name.
  assert cli_help.QUICK_COMMAND in (ROOT / 'README.md').read_text()
  assert config.model_opt.lr == config.actor_opt.lr == config.critic_opt.lr == 1e-3


def test_cli_run_on_cpu_prints_the_estimate(tmp_path):
  from dreamerv2_tf.precision import has_gpu
  if has_gpu():
    pytest.skip('the estimate is printed on CPU-only machines')
  # Long enough that the estimate's 2 s of measuring fit in on a fast idle CPU (600 steps
  # were done in under 2 s there, and printed nothing; 1,500 are 2.5 times that).
  proc = train_cli('--configs', 'debug', '--task', 'gym:CartPole-v1', '--steps', '1500',
                   '--eval_every', '5000', '--logdir', str(tmp_path / 'run'), timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [line for line in proc.stdout.splitlines() if line.startswith('CPU estimate')]
  assert len(lines) == 1 and '1,500 agent steps = 1,500 frames' in lines[0], proc.stdout[-2000:]
  # The banner names the preset chain and the overrides before the resolved config.
  assert proc.stdout.startswith('Config: defaults -> debug, then --task gym:CartPole-v1 '
                                '--steps 1500'), proc.stdout[:300]


def test_preset_chain():
  text = cli_help.preset_chain(['--configs', 'atari', 'debug', '--task', 'pong', '--seed=3'])
  assert text.startswith('Config: defaults -> atari -> debug, then --task pong --seed 3 (')
  assert cli_help.preset_chain([]).startswith('Config: defaults (')
