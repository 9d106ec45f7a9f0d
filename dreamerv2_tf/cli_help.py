"""`scripts/train.py --help`: usage, presets, overrides, tasks and every config key.

    scripts/train.py --help                     # everything
    scripts/train.py --help rssm                # one block, one key (rssm.deter) or one preset
    scripts/train.py --configs atari --help kl  # values after the atari preset

The meaning of a key is its comment in configs.yaml, the one source: `read_comments` takes the
comment on each line of the `defaults` block (and on the comment-only lines that continue it),
the section headings (`# Run`, ...) and the comment on each preset's line. No TensorFlow here.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from dreamerv2_tf.config import (CHOICES, RANGES, ConfigError, _default_path, _parse_argv,
                                 _suggest, load_config)

# The run that shows learning in minutes on a laptop CPU (README, Quickstart): CartPole's eval
# return climbs from about 10 toward the debug preset's time limit of 100. The tiny networks learn
# faster with the learning rates of the learning test (one regex key sets all three).
QUICK_COMMAND = ('.venv/bin/python scripts/train.py --configs debug --task gym:CartPole-v1 '
                 "--steps 20000 '--.*_opt\\.lr' 1e-3")
HELP_FLAGS = ('-h', '--help')
USAGE = """\
usage: scripts/train.py [--configs PRESET ...] [--task TASK] [--KEY VALUE ...]
       scripts/train.py [--configs PRESET ...] --help [KEY | BLOCK | PRESET]

Trains DreamerV2 (Hafner et al., ICLR 2021) on a task and writes the run to --logdir:
config.yaml, metrics.jsonl, TensorBoard events, checkpoints and the episodes. Rerunning the
same command with the same --logdir resumes the run; Ctrl-C (or SIGTERM) stores the running
episode, saves a checkpoint and stops.

Learn something in minutes on a CPU (CartPole's eval_return climbs from ~10 toward 100, the cap):
  {quick}
A paper run (the paper's settings; on a CPU this takes months, use a GPU):
  .venv/bin/python scripts/train.py --configs atari --task pong
"""
OVERRIDES = """\
Overrides (after the presets, in order; checked against the defaults' types):
  --KEY VALUE, --KEY=VALUE   --rssm.deter 200   --model_opt.lr=3e-4   --seed 1
  regex keys                 '--.*\\.norm' layer   (every key the regex fully matches)
  lists                      --grad_heads decoder,reward   or   --grad_heads '[decoder, reward]'
  schedules                  --actor_ent 'linear(3e-3,3e-4,1e6)'   (also warmup(n,v), exp(a,b,h))
  A value that starts with -- needs the = form. An unknown key or bad value is a one-line
  error naming the closest keys. Counts of steps are agent steps; logs count frames
  (agent steps x action_repeat).
"""
TASKS = """\
Tasks (--task):
  Atari             pong or atari_pong (the 55 games of the paper; with --configs atari)
  DeepMind Control  walker_walk or dmc_walker_walk (with --configs dmc_vision or dmc_proprio)
  gymnasium         gym:<id>, e.g. gym:CartPole-v1, gym:Pendulum-v1 (image, vector or dict obs)
  Crafter           crafter_reward or crafter_noreward (with --configs crafter)
"""


class Comments(NamedTuple):
  """What configs.yaml says about its keys, in file order."""
  keys: dict[str, str]      # dotted key or block name -> its comment
  sections: dict[str, str]  # dotted key -> the section heading above it (`Run`, ...)
  presets: dict[str, str]   # preset name -> the comment on its line


def _split_comment(line: str) -> tuple[str, str]:
  """'key: value  # text' -> ('key: value', 'text'); a # inside quotes is part of the value."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip(), line[i + 1:].strip()
  return line.rstrip(), ''


def read_comments(path: str | Path | None = None) -> Comments:
  """Reads the comments of configs.yaml (default: the file load_config reads)."""
  lines = Path(path or _default_path()).read_text(encoding='utf-8').splitlines()
  keys: dict[str, str] = {}
  sections: dict[str, str] = {}
  presets: dict[str, str] = {}
  preset, section, last = None, '', None  # last: (indent, key) a comment line may continue
  stack: list[tuple[int, str]] = []  # enclosing blocks: (indent, name)
  for line in lines:
    code, comment = _split_comment(line)
    indent = len(line) - len(line.lstrip(' '))
    if not code:
      if not comment:
        last = None  # a blank line ends a continuation
      elif last and indent > last[0]:
        keys[last[1]] = f'{keys[last[1]]} {comment}'.strip()
      elif preset == 'defaults' and indent == 2:
        section = comment
      continue
    name = code.strip().split(':', 1)[0].strip()
    value = code.strip().split(':', 1)[1].strip() if ':' in code else ''
    if indent == 0:
      preset, stack, last = name, [], None
      presets[name] = comment
      continue
    if preset != 'defaults':
      continue
    while stack and stack[-1][0] >= indent:
      stack.pop()
    key = '.'.join([n for _, n in stack] + [name])
    keys[key], sections[key], last = comment, section, (indent, key)
    if not value:
      stack.append((indent, name))
  return Comments(keys, sections, presets)


def _fmt(value: Any) -> str:
  """A value as it would be typed in configs.yaml or on the command line."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (list, tuple)):
    return f'[{", ".join(_fmt(v) for v in value)}]'
  if isinstance(value, float):
    if value == 0 or 1e-2 <= abs(value) < 1e4:
      return repr(value)  # 0.0, 0.25, 100.0
    digits = next(p for p in range(17) if float(f'{value:.{p}e}') == value)
    mantissa, exponent = f'{value:.{digits}e}'.split('e')
    return f'{mantissa}e{int(exponent)}'  # 1e4, 2.5e5, 1e-4
  if isinstance(value, str):
    return value if value and not value.isspace() else repr(value)
  return str(value)


def _allowed(key: str) -> str:
  choices = next((c for pat, c in CHOICES.items() if re.fullmatch(pat, key)), None)
  if choices:
    return 'one of ' + ', '.join(choices)
  for pattern, (low, high) in RANGES.items():
    if re.fullmatch(pattern, key):
      return f'in [{low}, {high}]' if high is not None else f'>= {low}'
  return ''


def _key_line(key: str, value: Any, meaning: str, width: int) -> str:
  return f'  {key:<{width}} {_fmt(value):<12} {meaning}'.rstrip()


def _preset_changes(preset_values: dict[str, dict], defaults: dict,
                    keys: Sequence[str]) -> list[str]:
  """'atari: rssm.hidden 600, rssm.deter 600' for each preset that changes one of `keys`."""
  lines = []
  for name, values in preset_values.items():
    changed = [f'{k} {_fmt(values[k])}' for k in keys if values[k] != defaults[k]]
    if changed:
      lines.append(f'  {name}: {", ".join(changed)}')
  return lines


def render(argv: Sequence[str] = (), path: str | Path | None = None) -> str:
  """The help text for a train.py command line that holds -h/--help (optionally with a name).

  Other arguments (--configs, overrides) are applied, so the values shown are the ones that
  command would train with. Raises ConfigError for a name that is no key, block or preset.
  """
  rest, topic = _without_help(argv)
  comments = read_comments(path)
  config = load_config(argv=rest, path=path)
  names, overrides = _parse_argv(rest)
  values, defaults = config.flat, load_config(path=path).flat
  presets = [p for p in comments.presets if p != 'defaults']
  chain = ' and '.join(([f'--configs {" ".join(names)}'] if names else []) +
                       (['the overrides'] if overrides else []))
  if topic is None:
    return _full(comments, values, chain, presets)
  per_preset = {p: load_config([p], path=path).flat for p in presets}
  where = f' (after {chain})' if chain else ''
  if topic in values:
    return _one_key(topic, values, defaults, comments, per_preset, where)
  block = [k for k in values if k.startswith(topic + '.')]
  if block:
    width = max(len(k) for k in block)
    out = [f'{topic}: {comments.keys.get(topic, "")}{where}'.rstrip()]
    out += [_key_line(k, values[k], comments.keys.get(k, ''), width) for k in block]
    changes = _preset_changes(per_preset, defaults, block)
    if changes:
      out += ['Presets that change it:'] + changes
    return '\n'.join(out) + '\n'
  if topic in presets:
    changed = [k for k in defaults if per_preset[topic][k] != defaults[k]]
    width = max((len(k) for k in changed), default=0)
    out = [f'--configs {topic}: {comments.presets.get(topic, "")}',
           'Sets (default in parentheses):']
    out += [f'  {k:<{width}} {_fmt(per_preset[topic][k])}  ({_fmt(defaults[k])})'
            for k in changed]
    return '\n'.join(out) + '\n'
  blocks = sorted({k.rsplit('.', 1)[0] for k in values if '.' in k})
  raise ConfigError(f'--help: {topic!r} is no config key, block or preset; '
                    f'{_suggest(topic, list(values) + blocks + presets)}')


def _without_help(argv: Sequence[str]) -> tuple[list[str], str | None]:
  """Removes -h/--help [NAME] (or --help=NAME) from argv; returns the rest and NAME."""
  rest, topic, argv, i = [], None, list(argv), 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--help='):
      topic = arg.split('=', 1)[1] or None
    elif arg in HELP_FLAGS:
      if i + 1 < len(argv) and not argv[i + 1].startswith('-'):
        topic, i = argv[i + 1], i + 1
    else:
      rest.append(arg)
    i += 1
  return rest, topic


def wants_help(argv: Sequence[str]) -> bool:
  return any(a in HELP_FLAGS or a.startswith('--help=') for a in argv)


def preset_chain(argv: Sequence[str]) -> str:
  """'Config: defaults -> atari -> debug, then --task pong --steps 2000' for a train.py argv."""
  names, overrides = _parse_argv(argv)
  text = 'Config: ' + ' -> '.join(['defaults'] + names)
  if overrides:
    text += ', then ' + ' '.join(f'--{k} {v}' for k, v in overrides)
  return text + ' (scripts/train.py --help KEY explains a key)'


def _one_key(key: str, values: dict, defaults: dict, comments: Comments,
             per_preset: dict[str, dict], where: str) -> str:
  out = [f'{key} = {_fmt(values[key])}{where}', f'  {comments.keys.get(key, "")}']
  if values[key] != defaults[key]:
    out.append(f'  default: {_fmt(defaults[key])}')
  allowed = _allowed(key)
  if allowed:
    out.append(f'  allowed: {allowed}')
  parent = key.rsplit('.', 1)[0] if '.' in key else ''
  if parent in comments.keys:
    out.append(f'  in block {parent}: {comments.keys[parent]}')
  changes = _preset_changes(per_preset, defaults, [key])
  if changes:
    out.append('  presets that change it: ' + '; '.join(c.strip() for c in changes))
  out.append(f'  set it with: --{key} VALUE')
  return '\n'.join(out) + '\n'


def _full(comments: Comments, values: dict, chain: str, presets: list[str]) -> str:
  out = [USAGE.format(quick=QUICK_COMMAND)]
  out.append('Presets (--configs NAME ...: applied in order after `defaults`, later ones win):')
  width = max(len(p) for p in presets)
  out += [f'  {p:<{width}}  {comments.presets.get(p, "")}' for p in presets]
  out.append('  e.g. --configs atari debug: the atari setup with tiny networks (a smoke run)\n')
  out.append(OVERRIDES)
  out.append(TASKS)
  title = f'after {chain}' if chain else 'the defaults'
  out.append(f'Config keys ({title}; `--help KEY`, `--help BLOCK` or `--help PRESET` for one):')
  width = max(len(k) for k in values)
  section, blocks = None, set()
  for key, value in values.items():
    if comments.sections.get(key) != section:
      section = comments.sections.get(key)
      out.append(f'\n # {section}')
    parent = key.rsplit('.', 1)[0] if '.' in key else ''
    if parent and parent not in blocks:
      blocks.add(parent)
      out.append(f'  {parent + ":":<{width}} {"":<12} {comments.keys.get(parent, "")}'.rstrip())
    out.append(_key_line(key, value, comments.keys.get(key, ''), width))
  return '\n'.join(out) + '\n'
