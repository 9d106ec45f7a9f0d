"""Schedules of the actor entropy scale and the actor gradient mix, as config strings.

Forms (steps are agent steps, the unit of the config's counts):
  '3e-4'              constant
  'linear(a,b,n)'     from a to b over n steps, then b
  'warmup(n,v)'       from 0 to v over n steps, then v
  'exp(a,b,h)'        from a toward b, halving the distance every h steps
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dreamerv2_tf.errors import ConfigError, short

if TYPE_CHECKING:
  import tensorflow as tf

SCHEDULE_KEYS = ('actor_ent', 'actor_grad_mix')
_NUM = r'\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*'
# Schedule form -> regex (full match) whose groups are the numeric arguments.
SCHEDULE_RE: dict[str, re.Pattern[str]] = {
    'const': re.compile(_NUM),
    'linear': re.compile(rf'\s*linear\({_NUM},{_NUM},{_NUM}\)\s*'),
    'warmup': re.compile(rf'\s*warmup\({_NUM},{_NUM}\)\s*'),
    'exp': re.compile(rf'\s*exp\({_NUM},{_NUM},{_NUM}\)\s*'),
}


def parse_schedule(value: str | float, key: str = 'schedule') -> tuple:
  """Parse a schedule into ('const', v), ('linear', a, b, n), ('warmup', n, v) or
  ('exp', a, b, halflife); n is a positive int, the rest are floats. Raises ConfigError."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return ('const', float(value))
  match = form = None
  for form, regex in SCHEDULE_RE.items():
    if isinstance(value, str) and (match := regex.fullmatch(value)):
      break
  if not match:
    raise ConfigError(f'config key {key!r} got {short(value)}; expected a number, '
                      'linear(a,b,n), warmup(n,v) or exp(a,b,halflife)')
  args = [float(x) for x in match.groups()]
  if form == 'const':
    return ('const', args[0])
  steps = args[0] if form == 'warmup' else args[2]
  if steps <= 0 or (form != 'exp' and not steps.is_integer()):  # they divide by it
    raise ConfigError(f'config key {key!r}: {value.strip()!r} needs a positive step count')
  if form == 'warmup':
    return ('warmup', int(args[0]), args[1])
  return (form, args[0], args[1], int(args[2]) if form == 'linear' else args[2])


def schedule(string: str, step) -> tf.Tensor:
  """Value of a schedule string at `step` (a scalar tensor or number), float32."""
  import tensorflow as tf  # Here: config.py imports this module and stays free of TensorFlow.
  kind, *args = parse_schedule(string)
  step = tf.cast(step, tf.float32)
  if kind == 'const':
    return tf.constant(args[0], tf.float32)
  if kind == 'linear':
    initial, final, duration = args
    mix = tf.clip_by_value(step / duration, 0.0, 1.0)
    return (1 - mix) * initial + mix * final
  if kind == 'warmup':
    warmup, value = args
    return tf.clip_by_value(step / warmup, 0.0, 1.0) * value
  if kind == 'exp':
    initial, final, halflife = args
    return (initial - final) * 0.5 ** (step / halflife) + final
  raise ValueError(f'unknown schedule {string!r}')
