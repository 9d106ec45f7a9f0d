"""Configuration: presets from configs.yaml, CLI overrides, type checks and an immutable Config.

    config = load_config(argv=sys.argv[1:])   # e.g. --configs atari --rssm.deter 200
    config.rssm.deter, config['model_opt.lr'], config.save(logdir / 'config.yaml')

Kept free of TensorFlow imports so that CLIs and tests start fast.
"""
from __future__ import annotations

import difflib
import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from dreamerv2_tf.errors import ConfigError, RunError, main_guard, short  # noqa: F401 (re-exported)
from dreamerv2_tf.schedule import SCHEDULE_KEYS, parse_schedule  # noqa: F401 (re-exported)

# Key regex (full match) -> allowed values, compared and stored as strings.
CHOICES: dict[str, tuple[str, ...]] = {
    r'precision': ('auto', '32', '16', 'bf16'),
    r'policy_xla': ('auto', 'true', 'false'),
    r'clip_rewards': ('tanh', 'identity', 'sign'),
    r'actor_grad': ('auto', 'reinforce', 'dynamics', 'both'),
    r'actor\.dist': ('auto', 'onehot', 'trunc_normal', 'trunc_normal_exact', 'normal',
                   'tanh_normal'),
    r'.*\.norm': ('none', 'layer'),
    r'.*\.act': ('elu', 'relu', 'tanh', 'swish', 'silu', 'gelu', 'leaky_relu', 'none'),
    r'rssm\.std_act': ('softplus', 'sigmoid', 'sigmoid2'),
    r'strategy': ('default', 'mirrored', 'multi_worker'),
    r'envs_parallel': ('auto', 'none', 'process', 'ale_vector'),
    r'replay\.nonfinite': ('error', 'drop'),
    r'expl_behavior': ('greedy', 'random', 'plan2explore', 'model_loss'),
    r'disag_target': ('stoch', 'deter', 'feat', 'embed'),
    r'expl_model_loss': ('kl',),
    r'expl_head\.dist': ('mse',),
    r'.*_opt\.opt': ('adam',),
    r'(reward_head|critic)\.dist': ('mse',),
    r'discount_head\.dist': ('binary',),
}
# Key regex -> inclusive bounds (high None = unbounded), checked once all overrides are applied.
RANGES: dict[str, tuple[float, float | None]] = {
    r'kl\.balance|discount|discount_lambda': (0, 1),
    r'dataset\.(batch|length)|imag_horizon|rssm\.(hidden|deter|stoch)': (1, None),
    r'disag_models': (2, None),  # Their disagreement is a standard deviation.
    r'disag_offset': (0, None),
    r'rssm\.discrete': (0, None),  # 0 selects Gaussian latents (the paper's ablation).
    r'skip_limit': (0, None),  # 0: never stop for skipped updates.
    r'checkpoint_minutes': (0, None),  # 0: checkpoints at evaluations and stops only.
}
_PLAIN_KEY = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*)*')  # anything else is a key regex


def _yaml() -> YAML:
  yaml = YAML(typ='safe', pure=True)
  yaml.default_flow_style = None  # lists inline, mappings as blocks
  yaml.sort_base_mapping_type_on_output = False  # keep the defaults' key order
  return yaml


def _type_name(default: Any) -> str:
  if isinstance(default, tuple):
    return f'list of {_type_name(default[0])}' if default else 'list'
  return 'bool (true/false)' if isinstance(default, bool) else type(default).__name__


def _split_list(text: str) -> list[str]:
  """'[a, b]' or 'a,b' -> ['a', 'b']; quotes around an element are removed, commas split."""
  text = text.strip()
  text = text[1:-1] if text.startswith('[') and text.endswith(']') else text
  items = [item.strip() for item in text.split(',')] if text.strip() else []
  return [i[1:-1] if len(i) >= 2 and i[0] == i[-1] and i[0] in '\'"' else i for i in items]


def _coerce(key: str, value: Any, default: Any, cli: bool = False, where: str = '') -> Any:
  """Return value converted to the type of `default` (lists become tuples) or raise.

  cli=True means value is command-line text, parsed as a YAML scalar unless a str is expected.
  """
  choices = next((c for pat, c in CHOICES.items() if re.fullmatch(pat, key)), None)
  if isinstance(default, tuple) and isinstance(value, (str, list, tuple)) and not choices:
    items, cli = (_split_list(value), True) if isinstance(value, str) else (value, cli)
    elem = default[0] if default else None  # an empty default list takes any scalars
    return tuple(_coerce(f'{key}[{i}]', v, elem, cli, where) for i, v in enumerate(items))
  raw = value
  if cli and not choices and not isinstance(default, str):
    try:
      value = _yaml().load(value)
    except YAMLError:
      value = None  # reported as a type error below
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  kind = 'null' if value is None else type(value).__name__
  if choices and isinstance(value, bool):  # YAML `policy_xla: true` is a bool
    value = 'true' if value else 'false'
  if choices:  # compared as strings: YAML `precision: 16` is an int
    ok, value = (number or isinstance(value, str)) and str(value) in choices, str(value)
  elif isinstance(default, bool):
    ok = isinstance(value, bool)
  elif isinstance(default, (int, float)):  # an int accepts 1e4, not 1.5
    ok = number and (isinstance(default, float) or isinstance(value, int) or value.is_integer())
    value = type(default)(value) if ok else value
  else:  # a str, or None for the elements of an empty default list
    ok = isinstance(value, str) or (default is None and (number or isinstance(value, bool)))
  if not ok:
    expected = f'one of {", ".join(choices)}' if choices else _type_name(default)
    hint = " (quote numbers in YAML: '1e-3')" if isinstance(default, str) and number else ''
    raise ConfigError(f'{where}config key {key!r} expects {expected}, got {short(raw)} '
                      f'({kind}){hint}')
  return value


def _flatten(data: Mapping) -> Iterator[tuple[str, Any]]:
  """Yield (dotted key, value) from nested blocks; a regex part is joined with an escaped dot."""
  for key, value in data.items():
    key = str(key)
    if not isinstance(value, Mapping):
      yield key, value
      continue
    for sub, subvalue in _flatten(value):
      if _PLAIN_KEY.fullmatch(key) and _PLAIN_KEY.fullmatch(sub):
        yield f'{key}.{sub}', subvalue
      else:
        parts = (re.escape(p) if _PLAIN_KEY.fullmatch(p) else p for p in (key, sub))
        yield r'\.'.join(parts), subvalue


def _join(prefix: str, key: str) -> str:
  return f'{prefix}.{key}' if prefix else key


def _suggest(key: str, keys: Sequence[str], prefix: str = '') -> str:
  close = [k for k in keys if k.startswith(key + '.')]  # a block: name its keys
  close += difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
  leaf = key.rsplit('.', 1)[-1]  # so that --deter suggests rssm.deter
  close += [k for k in keys if k.rsplit('.', 1)[-1] == leaf and k not in close]
  close = [_join(prefix, k) for k in list(dict.fromkeys(close))[:3]]
  return f'did you mean {", ".join(close)}?' if close else 'see the defaults in configs.yaml'


def _validate(data: Mapping[str, Any], prefix: str) -> None:
  """Checks of values rather than types: schedule strings and numeric ranges."""
  for key, value in data.items():
    full = _join(prefix, key)
    if full in SCHEDULE_KEYS:
      parse_schedule(value, full)
    for pattern, (low, high) in RANGES.items():
      if not re.fullmatch(pattern, full) or not isinstance(value, (int, float)):
        continue
      if value < low or (high is not None and value > high):
        bounds = f'in [{low}, {high}]' if high is not None else f'>= {low}'
        raise ConfigError(f'config key {full!r} must be {bounds}, got {value!r}')


def _no_attr(self: Any, *args: Any) -> None:
  raise AttributeError('Config is immutable; config.update({...}) returns a changed copy')


def _no_item(self: Any, *args: Any) -> None:
  raise TypeError('Config is immutable; config.update({...}) returns a changed copy')


class Config(Mapping):
  """Immutable configuration of flat dotted keys: config.rssm.deter, config['rssm.deter'].

  Iteration and len() cover top-level names ('seed', 'rssm', ...); config.rssm is a sub-Config.
  Lists are returned as fresh copies. Keys named like methods (keys, items, update, ...) are
  reachable with item access. Config(data) takes the types from `data`; range and schedule
  checks run in load_config() and update().
  """
  __setattr__ = __delattr__ = _no_attr
  __setitem__ = __delitem__ = _no_item

  def __init__(self, data: Mapping[str, Any] | None = None):
    flat: dict[str, Any] = {}
    for key, value in _flatten(data or {}):
      if not _PLAIN_KEY.fullmatch(key):
        raise ConfigError(f"invalid config key '{key}'; expected dotted names like a.b")
      if value is None:
        raise ConfigError(f'config key {key!r} is null; every key needs a typed value')
      flat[key] = _coerce(key, value, tuple(value) if isinstance(value, list) else value)
    for key in flat:
      if any(k.startswith(key + '.') for k in flat):
        raise ConfigError(f'config key {key!r} is both a value and a block')
    self._init(flat, dict(flat), '')

  def _init(self, data: dict[str, Any], schema: dict[str, Any], prefix: str) -> Config:
    object.__setattr__(self, '_data', data)
    object.__setattr__(self, '_schema', schema)  # key -> default that fixes the type
    object.__setattr__(self, '_prefix', prefix)  # of a sub-Config, for messages and checks
    return self

  def _apply(self, pairs: Iterable[tuple[str, Any]], cli: bool, where: str) -> Config:
    """A copy with the overrides applied; a key is a dotted name or a full-match regex."""
    data = dict(self._data)
    for key, value in pairs:
      full = _join(self._prefix, key)  # sub-Configs report full dotted names
      if key in self._schema:
        targets = [key]
      elif _PLAIN_KEY.fullmatch(key):
        raise ConfigError(f'{where}unknown config key {full!r}; '
                          f'{_suggest(key, list(self._schema), self._prefix)}')
      else:
        try:
          targets = [k for k in self._schema if re.fullmatch(key, k)]
        except re.error as e:
          raise ConfigError(f"{where}invalid key pattern '{key}': {e}") from None
        if not targets:
          raise ConfigError(f"{where}key pattern '{key}' matches no config key")
      for k in targets:
        data[k] = _coerce(_join(self._prefix, k), value, self._schema[k], cli, where)
    return _rebuild(type(self), data, self._schema, self._prefix)

  def update(self, overrides: Mapping[str, Any]) -> Config:
    """A new Config with overrides (dotted, nested or regex keys) type-checked and applied."""
    if not isinstance(overrides, Mapping):
      raise ConfigError(f'update() expects a mapping, got {short(overrides)}')
    config = self._apply(_flatten(overrides), cli=False, where='update(): ')
    changed = {k: v for k, v in config._data.items() if v != self._data[k]}
    _validate(changed, self._prefix)  # only these: a sub-Config lacks context for the rest
    return config

  def __getitem__(self, key: str) -> Any:
    if isinstance(key, str) and key in self._data:
      value = self._data[key]
      return list(value) if isinstance(value, tuple) else value  # a copy: stay immutable
    start = f'{key}.'
    data = {k[len(start):]: v for k, v in self._data.items() if k.startswith(start)}
    if not isinstance(key, str) or not data:
      raise KeyError(f'no config key {_join(self._prefix, str(key))!r}; '
                     f'{_suggest(str(key), list(self._data), self._prefix)}')
    schema = {k[len(start):]: v for k, v in self._schema.items() if k.startswith(start)}
    return _rebuild(type(self), data, schema, _join(self._prefix, key))

  def __getattr__(self, name: str) -> Any:
    if name.startswith('_'):  # internals and dunder probes (copy, pickle)
      raise AttributeError(name)
    try:
      return self[name]
    except KeyError as e:
      raise AttributeError(e.args[0]) from None

  def __iter__(self) -> Iterator[str]:
    return iter(dict.fromkeys(k.split('.', 1)[0] for k in self._data))

  def __len__(self) -> int:
    return sum(1 for _ in self)

  def __eq__(self, other: object) -> bool:
    return self._data == other._data if isinstance(other, Config) else NotImplemented

  def __hash__(self) -> int:
    return hash(frozenset(self._data.items()))

  @property
  def flat(self) -> dict[str, Any]:
    """A copy of the values as a dict of dotted key -> value."""
    return {k: self[k] for k in self._data}

  def to_dict(self) -> dict[str, Any]:
    """The values as nested plain dicts."""
    result: dict[str, Any] = {}
    for key, value in self.flat.items():
      *parents, leaf = key.split('.')
      node = result
      for part in parents:
        node = node.setdefault(part, {})
      node[leaf] = value
    return result

  def __str__(self) -> str:
    def fmt(v: Any) -> str:
      return f'[{", ".join(map(fmt, v))}]' if isinstance(v, tuple) else repr(v)
    width = max((len(k) for k in self._data), default=0) + 1
    return '\n'.join(f'{k + ":":<{width}} {fmt(v)}' for k, v in self._data.items())

  def __repr__(self) -> str:
    title = f'Config {self._prefix!r}' if self._prefix else 'Config'
    return f'{title}:\n' + '\n'.join('  ' + line for line in str(self).splitlines())

  def save(self, path: str | os.PathLike) -> None:
    """Write the flat values as YAML atomically (temp file in the same folder + rename)."""
    from dreamerv2_tf.files import write_text_atomic
    text = io.StringIO()
    _yaml().dump(self.flat, text)
    write_text_atomic(path, text.getvalue())

  @classmethod
  def load(cls, path: str | os.PathLike) -> Config:
    """Read a file written by save() (nested blocks are accepted too)."""
    data = _read_yaml(Path(path))
    if not isinstance(data, Mapping):
      raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    return cls(data)


def _rebuild(cls: type, data: dict, schema: dict, prefix: str) -> Config:
  return object.__new__(cls)._init(data, schema, prefix)  # skips checks already done


def _read_yaml(path: Path) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return _yaml().load(f)
  except OSError as e:
    raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from None
  except YAMLError as e:
    raise ConfigError(f"cannot parse '{path}': {' '.join(str(e).split())}") from None


def _default_path() -> Path:
  here = Path(__file__)  # a checkout first, then the copy packaged by setup.py
  for candidate in (here.resolve().parent.parent / 'configs.yaml', here.parent / 'configs.yaml'):
    if candidate.is_file():
      return candidate
  raise ConfigError(f'configs.yaml not found above or inside {here.parent}')


def _split_names(names: str | Iterable[str]) -> list[str]:
  names = [names] if isinstance(names, str) else list(names)
  return [n for name in names for n in re.split(r'[,\s]+', name) if n]


def _parse_argv(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Split CLI args into preset names (--configs) and ordered (key, text) overrides."""
  names: list[str] = []
  overrides: list[tuple[str, str]] = []
  argv, i = list(argv), 0
  while i < len(argv):
    key, eq, value = argv[i][2:].partition('=')
    if not argv[i].startswith('--') or not key:
      raise ConfigError(f'unexpected argument {argv[i]!r}; expected --key value, '
                        '--key=value or --configs name ...')
    i += 1
    if key == 'configs':
      found = [value] if eq else []
      while not eq and i < len(argv) and not argv[i].startswith('--'):
        found, i = found + [argv[i]], i + 1
      if not _split_names(found):
        raise ConfigError('--configs needs at least one preset name')
      names += _split_names(found)
      continue
    if not eq:
      if i >= len(argv) or argv[i].startswith('--'):
        raise ConfigError(f"flag '--{key}' has no value (use --{key}=VALUE for a value "
                          'that starts with --)')
      value, i = argv[i], i + 1
      # Rejoin a flow list that the shell split: --grad_heads [decoder, reward]
      while (value.lstrip().startswith('[') and ']' not in value and i < len(argv)
             and not argv[i].startswith('--')):
        value, i = f'{value} {argv[i]}', i + 1
    overrides.append((key, value))
  return names, overrides


def load_config(presets: str | Sequence[str] = (), argv: Sequence[str] = (),
                path: str | os.PathLike | None = None) -> Config:
  """Combine `defaults`, the named presets, those after --configs, then the CLI overrides.

  Args:
      presets: preset names, as a sequence or one comma- or space-separated string.
      argv: CLI strings such as ['--configs', 'atari', '--rssm.deter', '200', '--kl.free=1'].
      path: the presets file; defaults to the top-level configs.yaml (or the packaged copy).
  Raises:
      ConfigError: unknown preset or key, badly typed or disallowed value, malformed argv.
  """
  path = Path(path) if path is not None else _default_path()
  file = _read_yaml(path)
  if not isinstance(file, Mapping) or not isinstance(file.get('defaults'), Mapping):
    raise ConfigError(f"'{path}' must be a mapping of presets that includes `defaults`")
  cli_names, overrides = _parse_argv(argv)
  names, valid = _split_names(presets) + cli_names, [n for n in file if n != 'defaults']
  for name in names:
    if name not in file:
      close = difflib.get_close_matches(name, valid, n=1)
      hint = f' (did you mean {close[0]}?)' if close else ''
      raise ConfigError(f'unknown preset {name!r}{hint}; valid presets: {", ".join(valid)}')
    if not isinstance(file[name] or {}, Mapping):
      raise ConfigError(f"preset {name!r} in '{path}' must be a mapping of keys to values")
  config = Config(file['defaults'])
  for name in names:
    config = config._apply(_flatten(file[name] or {}), False, f'preset {name!r}: ')
  config = config._apply(overrides, True, 'command line: ')
  _validate(config._data, '')  # once at the end: presets may pass through odd values
  return config
