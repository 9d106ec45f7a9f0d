"""Schedules of the actor entropy scale and the actor gradient mix, as config strings.

Forms (steps are agent steps, the unit of the config's counts):
  '3e-4'              constant
  'linear(a,b,n)'     from a to b over n steps, then b
  'warmup(n,v)'       from 0 to v over n steps, then v
  'exp(a,b,h)'        from a toward b, halving the distance every h steps
"""
from __future__ import annotations

import tensorflow as tf

from dreamerv2_tf.config import parse_schedule


def schedule(string: str, step) -> tf.Tensor:
  """Value of a schedule string at `step` (a scalar tensor or number), float32."""
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
