"""A run's folder: where it is, who uses it, and whether a resume fits the saved config.

    logdir/                     the chief's workdir
      run.lock                  held while a process trains here (`run_lock`)
      config.yaml               written by the chief once its lock is held
      workers/worker<k>/        worker k's workdir (its own lock and episodes), multi_worker only
"""
from __future__ import annotations

import datetime
import pathlib
import re

from dreamerv2_tf.config import Config, ConfigError
from dreamerv2_tf.run_lock import RunLock

# Keys that shape the networks or the data: a logdir cannot be resumed with other values.
STRUCTURAL = r'(task|action_repeat|render_size|atari_grayscale|rssm\..*|encoder\..*|decoder\..*|' \
             r'reward_head\..*|discount_head\..*|actor\..*|critic\..*|pred_discount|' \
             r'dataset\..*|precision)$'


def default_logdir(config: Config) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return pathlib.Path('logdir') / config.task.replace(':', '_').replace('/', '_') / stamp


def prepare_logdir(config: Config, chief: bool = True, worker: int = 0,
                   cleanup: list | None = None) -> tuple[Config, pathlib.Path]:
  """Resolves the logdir, locks this process's workdir and checks a resumed run's config.

  Only the chief writes `config.yaml`; other workers of a multi-worker run only check it. The
  workdir (the logdir; `workers/worker<k>` for other workers) is locked before anything is
  written (`run_lock`); the lock's release is appended to `cleanup`.
  """
  if config.strategy == 'multi_worker' and not config.logdir:
    raise ConfigError('strategy multi_worker needs --logdir: the same path on every worker, '
                      'on a filesystem they share (the chief writes checkpoints there)')
  logdir = pathlib.Path(config.logdir) if config.logdir else default_logdir(config)
  saved = logdir / 'config.yaml'
  if saved.exists():
    old = Config.load(saved)
    diffs = [k for k in sorted(set(old.flat) | set(config.flat))
             if re.match(STRUCTURAL, k) and old.flat.get(k) != config.flat.get(k)]
    if diffs:
      shown = ', '.join(f'{k} {old.flat.get(k)!r} -> {config.flat.get(k)!r}' for k in diffs[:4])
      raise ConfigError(f'logdir {str(logdir)!r} holds a run with another network or data '
                        f'layout ({shown}); use a new --logdir or the saved values')
  config = config.update({'logdir': str(logdir)})
  lock = RunLock(workdir(logdir, worker)).acquire()
  if cleanup is not None:
    cleanup.append(lock.release)
  if lock.took_over:
    print(f'Took over the lock of process {lock.took_over.get("pid")} on '
          f'{lock.took_over.get("host")}, which has ended', flush=True)
  if chief:
    config.save(saved)
  return config, logdir


def workdir(logdir: pathlib.Path, worker: int) -> pathlib.Path:
  """Where worker `worker` (0: the chief) keeps its episodes and its lock."""
  return logdir if worker == 0 else logdir / 'workers' / f'worker{worker}'
