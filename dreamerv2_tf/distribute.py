"""Data-parallel training with tf.distribute: strategy choice and replica helpers (the cluster
and the chief: `cluster.py`).

How the train step stays equal to the single-device step on the same global batch:

  global batch [B, T] --split--> replica r gets rows [r*B/N, (r+1)*B/N)
  replica r:  local mean losses --grad--> g_r
  all:        g = mean_r g_r  (= gradient of the global-batch mean: equal shares)
              clip g by its global norm, then update; the same update on every replica
  noise:      a function of (seed, update, row of the global batch), see `noise.py`

Terms that are not linear in the batch take their batch statistic from all replicas:
free nats (`max(mean KL, free)`) and the reward normaliser. Metrics are averaged over
replicas (for a standard deviation that is the mean of the replicas' values).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import tensorflow as tf

from dreamerv2_tf import cluster
from dreamerv2_tf.errors import ConfigError

STRATEGIES = ('default', 'mirrored', 'multi_worker')


def make_strategy(name: str, devices=None) -> tf.distribute.Strategy:
  """The strategy for a `strategy` config value; call once, before other TensorFlow work.

  default: one device (TensorFlow's default strategy). mirrored: `MirroredStrategy` over the
  visible GPUs (or `devices`). multi_worker: `MultiWorkerMirroredStrategy` over the cluster
  that the `TF_CONFIG` environment variable describes.
  """
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    strategy = tf.distribute.MirroredStrategy(devices)
    if strategy.num_replicas_in_sync == 1:
      warnings.warn('strategy mirrored sees one device; it runs like default with extra '
                    'overhead', stacklevel=2)
    return strategy
  if name == 'multi_worker':
    cluster.check(name)
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f'strategy {name!r}; allowed: {", ".join(STRATEGIES)}')


def replica_info() -> tuple[tf.Tensor | int, int]:
  """(this replica's index, number of replicas) in the current replica context."""
  ctx = tf.distribute.get_replica_context()
  if ctx is None:  # Cross-replica context: the caller works on the whole batch.
    return 0, 1
  return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def num_replicas() -> int:
  return replica_info()[1]


def all_mean(values):
  """Averages a (nested) value over the replicas; identity with one replica."""
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return values
  return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, values)


def cross_replica(fn, *args):
  """Runs `fn(*args)` once in cross-replica context, for updates of mirrored variables.

  Arguments that differ per replica are taken from the first replica: callers pass only values
  the replicas agree on (all-reduced, or computed from mirrored variables).
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None:
    return fn(*args)

  def merged(strategy, *args):
    first = lambda x: (strategy.experimental_local_results(x)[0]
                       if isinstance(x, tf.distribute.DistributedValues) else x)
    return fn(*tf.nest.map_structure(first, args))
  return ctx.merge_call(merged, args=args)


def cross_replica_cond(pred: tf.Tensor, fn, args: list) -> None:
  """Runs `fn(strategy, *args)` once, in cross-replica context, when `pred` (equal on all
  replicas) holds; each of `args` arrives as its per-replica values (`PerReplica` under a
  strategy with several replicas), for `strategy.extended.update` to hand each device its own.

  Called in replica context. The cond is taken in cross-replica context: tf.distribute does
  not allow a cond in replica context whose branch calls `merge_call`.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None:
    raise RuntimeError('cross_replica_cond must be called in replica context')

  def merged(strategy, pred, args):
    pred = strategy.experimental_local_results(pred)[0]
    def run():
      fn(strategy, *args)
      return tf.constant(True)
    tf.cond(pred, run, lambda: tf.constant(False))
  ctx.merge_call(merged, args=(pred, list(args)))


def split_batch(strategy: tf.distribute.Strategy, batch: dict) -> dict:
  """Splits a global batch `[B, ...]` (numpy or tensors) into equal per-replica shares."""
  n = strategy.num_replicas_in_sync
  size = len(next(iter(batch.values())))
  if size % n:
    raise ValueError(f'batch size {size} does not split over {n} replicas; use a multiple of {n}')
  share = size // n

  def value_fn(ctx):
    i = ctx.replica_id_in_sync_group
    return {k: tf.convert_to_tensor(v[i * share:(i + 1) * share]) for k, v in batch.items()}
  return strategy.experimental_distribute_values_from_function(value_fn)


def train_dataset(strategy: tf.distribute.Strategy, replay, config) -> Iterable:
  """The replay's training batches: dicts of arrays; under a strategy, per-replica values
  distributed by the strategy's own input API.

  Each worker samples its own replay: the dataset function runs once per worker and draws the
  share of the global `dataset.batch` that its replicas train on (the strategy also prefetches
  to the devices).
  """
  batch, length = config.dataset.batch, config.dataset.length
  if config.strategy == 'default':
    if config.deterministic:  # Sampled in the loop's thread, not raced by tf.data.
      return replay.batches(batch, length)
    dataset = replay.dataset(batch, length)
    gpus = tf.config.list_logical_devices('GPU')
    if gpus:  # Copy the next batch to the GPU while the current one trains (unmeasured here).
      dataset = dataset.apply(tf.data.experimental.prefetch_to_device(gpus[0].name))
    return dataset
  replicas = strategy.num_replicas_in_sync
  if batch % replicas:
    raise ConfigError(f'dataset.batch {batch} does not split over {replicas} replicas; '
                      f'use a multiple of {replicas}')
  def dataset_fn(ctx):
    return replay.dataset(ctx.get_per_replica_batch_size(batch), length)
  return strategy.distribute_datasets_from_function(dataset_fn)
