"""The training loop: prefill, train, evaluate, log and checkpoint, as in the paper's protocol.

Counts in the config are agent steps; everything logged uses environment frames
(agent steps x action_repeat). A run lives in its logdir: `config.yaml`, `metrics.jsonl`,
TensorBoard events, `checkpoints/`, `train_episodes/`, `eval_episodes/`. Starting again with the
same logdir resumes from the latest checkpoint and the stored episodes.
"""
from __future__ import annotations

import pathlib
import re
import sys
import time

import numpy as np

from dreamerv2_tf import finite
from dreamerv2_tf.config import Config, ConfigError
from dreamerv2_tf.logdir import prepare_logdir  # noqa: F401  (also the loop's public API)
from dreamerv2_tf.periods import EvalSchedule, Every, logged_evaluations
from dreamerv2_tf.stop_signal import StopSignal

def seed_everything(seed: int) -> None:
  import keras
  keras.utils.set_random_seed(int(seed) % (2 ** 31))  # Python, numpy and TensorFlow.


def train(env, config: Config, eval_env=None) -> pathlib.Path:
  """Trains DreamerV2 as configured; returns the logdir.

  env / eval_env: environments the caller built (the observation contract of
  `dreamerv2_tf.envs`, or a gymnasium env, which is wrapped), or None to make them from
  `config.task` (`config.envs` of them for training). Without an eval_env, a gymnasium env is
  made again from its spec for evaluation; other envs need eval_env.

  A run that cannot go on raises a `RunError` with a one-line message (docs/failures.md):
  non-finite env data, diverged training, a logdir in use, a failed write. The logdir's lock
  is released and the envs are closed on every way out.
  """
  cleanup: list = []  # Run last to first on the way out, once each.
  try:
    return _train(env, config, eval_env, cleanup)
  finally:
    for fn in reversed(cleanup):
      try:
        fn()
      except Exception as e:  # The first error is the one to report; later ones are noise.
        print(f'warning: while stopping: {type(e).__name__}: {e}', file=sys.stderr, flush=True)


def _train(env, config: Config, eval_env, cleanup: list) -> pathlib.Path:
  import types

  import tensorflow as tf
  from dreamerv2_tf import distribute
  from dreamerv2_tf import envs as envs_lib
  from dreamerv2_tf import precision
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.checkpoints import Checkpoints
  from dreamerv2_tf.divergence import SkipWatch
  from dreamerv2_tf.driver import Driver, random_policy
  from dreamerv2_tf.eta import RunEstimate
  from dreamerv2_tf.logger import Logger, Progress
  from dreamerv2_tf.logdir import workdir as worker_dir
  from dreamerv2_tf.replay import Replay
  from dreamerv2_tf.timeshare import TimeShare

  if env is None:
    try:
      config = config.update({'task': envs_lib.task_name(config.task)})
    except ValueError as e:  # An unknown task is bad input: one line, no traceback.
      raise ConfigError(str(e)) from None
  elif eval_env is None:
    eval_env = _second_env(env)
  if config.deterministic and config.strategy != 'default':
    raise ConfigError(f'deterministic: true runs with strategy default only, not '
                      f'{config.strategy!r}')
  # This process's place among multi-worker workers (0: the chief); workers explore differently.
  worker = distribute.task_index(config.strategy)
  # Environments first: a task that cannot be made leaves no logdir behind.
  train_env = make_envs(env, config, 'train', config.envs, worker)
  eval_env_ = make_envs(eval_env, config, 'eval', 1, worker)
  try:
    # Devices and the strategy come before any other TensorFlow work (multi-worker needs it).
    device = precision.setup_devices()
    strategy = distribute.make_strategy(config.strategy)
    chief = worker == 0
    config, logdir = prepare_logdir(config, chief, worker, cleanup)
  except ValueError as e:  # E.g. multi_worker without TF_CONFIG.
    train_env.close()
    eval_env_.close()
    raise ConfigError(str(e)) from None
  except BaseException:
    train_env.close()
    eval_env_.close()
    raise
  # Every worker acts and keeps its own replay; only the chief writes logs and checkpoints.
  workdir = worker_dir(logdir, worker)
  print(f'Logdir: {logdir}', flush=True)
  print(f'Strategy: {config.strategy}, {strategy.num_replicas_in_sync} replica(s)'
        f'{"" if chief else "; not the chief: no logs or checkpoints"}', flush=True)
  policy_name = precision.resolve(config.precision)
  why = f' ({precision.auto_precision()[1]})' if str(config.precision) == 'auto' else ''
  print(f'Device: {device}; precision {config.precision} -> {policy_name}{why}; '
        f'tf.function {config.jit}; XLA for the train step {config.xla}, for the policy '
        f'{precision.policy_xla(config.policy_xla, policy_name) and config.jit}', flush=True)
  print(config, flush=True)

  obs_space, act_space = train_env.obs_space, train_env.act_space
  replay_kw = config.replay.to_dict()
  seed = config.seed + 1000 * worker  # Workers explore differently.
  cleanup.extend((train_env.close, eval_env_.close))
  train_replay = Replay(workdir / 'train_episodes', seed=seed, **replay_kw)
  eval_replay = Replay(workdir / 'eval_episodes', seed=seed + 1, nonfinite=replay_kw['nonfinite'],
                       capacity=max(replay_kw['capacity'] // 10, 1),
                       minlen=config.dataset.length, maxlen=config.dataset.length)
  logger = Logger(logdir if chief else None, config.action_repeat,
                  total_frames=config.steps * config.action_repeat)
  # On a CPU: how long this run takes at the measured rate, and what to run instead.
  estimate = RunEstimate(config.steps, config.action_repeat, cpu=device == 'cpu')

  cleanup.append(logger.close)
  # For checkpoints older than the saved evaluation step. Read before the agent is built (in a
  # multi-worker run, before the workers' first collective), so that every worker reads the
  # file before the chief can log anything new.
  logged = logged_evaluations(logdir / 'metrics.jsonl', config.action_repeat)
  # Seeded before the agent is built: the seed chooses the initial weights too.
  seed_everything(seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  agent = Agent(config, obs_space, act_space, strategy=strategy)
  step = agent.step  # Agent steps: the loop's counter and the clock of the agent's schedules.
  evals = EvalSchedule(config.eval_every)  # Saved too: a resume keeps the evaluation steps.
  checkpoints = Checkpoints({'agent': agent, 'step': step, 'evaluated': evals.evaluated},
                            logdir / 'checkpoints', agent.weights_, added=['evaluated'])
  # Read once: in a multi-worker run the chief may save while another worker starts up.
  resumed = checkpoints.latest
  if resumed:
    if checkpoints.restore(resumed):  # Saved before `evaluated` was: from metrics.jsonl.
      evals.recover(logged, int(step))
    until = evals.steps_to_next(int(step))
    print(f'Resumed from {resumed} at {int(step) * config.action_repeat:,} '
          f'frames; replay holds {train_replay.stats["loaded_steps"]:,} steps'
          + ('' if until is None else
             f'; next evaluation at {(int(step) + until) * config.action_repeat:,} frames'),
          flush=True)
  # Supersedes what an earlier process logged past its checkpoint (it is logged again).
  logger.started(int(step), int(evals.evaluated) if int(evals.evaluated) >= 0 else None)
  # Updates skipped for a non-finite loss or gradient: too many in a row stop the run.
  watch = SkipWatch(config.skip_limit, lambda: checkpoints.latest)
  # Seeding with the step keeps a resumed run reproducible from its checkpoint.
  seed_everything(seed + int(step))
  rng = np.random.default_rng(seed + int(step))

  def count_step(tran, worker):
    if not tran['is_first']:
      step.assign_add(1)

  videos = {'eval': 0}

  def log_episode(ep, worker, mode):
    if finite.first_nonfinite(ep) is not None:
      return  # Dropped by the replay (replay.nonfinite drop): counted, not averaged.
    # Means over the episodes that end within one log period (or one evaluation).
    logger.mean(f'{mode}_return', float(np.sum(ep['reward'])))
    logger.mean(f'{mode}_length', len(ep['reward']) - 1)
    # log_keys_sum/mean/max: regexes of episode keys (e.g. Crafter's achievements) to log.
    for op in ('sum', 'mean', 'max'):
      pattern = config[f'log_keys_{op}']
      for key, value in ep.items():
        if re.match(pattern, key):
          name = key[len('log_'):] if key.startswith('log_') else key
          logger.mean(f'{mode}_{op}_{name}', float(getattr(np, op)(value)))
    if mode == 'eval' and videos['eval'] == 0:
      for key in config.log_keys_video:
        if key in ep and ep[key].ndim == 4:
          logger.video(f'eval_policy_{key}', ep[key][:1000])  # Bounded: Atari runs 27k steps.
      videos['eval'] += 1

  # Where the wall time goes, logged at every periodic write (see timeshare.py).
  times = TimeShare()
  timed = times.timed

  def log_times():
    for mode, replay in (('train', train_replay), ('eval', eval_replay)):
      if replay.stats['dropped_episodes']:  # Since the start of this process.
        logger.scalar(f'{mode}_dropped_episodes', replay.stats['dropped_episodes'])
    times.log(logger, train_env.num_envs * config.action_repeat)

  # The driver only resets and steps its env: a namespace of the timed methods is enough.
  timed_env = types.SimpleNamespace(reset=timed('env', train_env.reset),
                                    step=timed('env', train_env.step))
  train_driver = Driver(timed_env, act_space['action'])
  train_driver.on_step(count_step)
  train_driver.on_step(timed('replay', train_replay.add_step))
  train_driver.on_episode(lambda ep, w: log_episode(ep, w, 'train'))
  eval_driver = Driver(eval_env_, act_space['action'])
  # Step by step, as training's: non-finite data is caught before it reaches the policy.
  eval_driver.on_step(eval_replay.add_step)
  eval_mode = ['eval']  # 'eval_random' while it plays the random episode after the prefill.
  eval_driver.on_episode(lambda ep, w: log_episode(ep, w, eval_mode[0]))

  with StopSignal() as stop:
    train_driver.stop = eval_driver.stop = stop
    # Agent steps stored, as the paper counts them: an episode's first transition is no step.
    stored = train_replay.stats['total_steps'] - train_replay.stats['total_episodes']
    prefill = int(config.prefill) - stored
    if prefill > 0 and not stop():
      bar, done, episodes = Progress('Prefill', prefill), 0, 0
      random = timed('policy', random_policy(act_space['action'], rng))
      # As the paper's prefill: `prefill` agent steps and at least one whole episode.
      while (done < prefill or not episodes) and not stop():
        more = train_driver(random, steps=min(500, prefill - done), episodes=int(done >= prefill))
        done, episodes = done + more[0], episodes + more[1]
        bar.update(min(done, prefill))
      bar.close()
    if evals.every > 0 and int(evals.evaluated) < 0 and not stop():
      # As the paper's train.py after its prefill: an episode of the random policy in the eval
      # env. Its curves hold it in their first bin (it logs it as eval_return); here it is
      # eval_random_return, which compare.py bins with the evaluations as the paper's files
      # do. Before the first evaluation only, so that it never lands in a later bin (a stop
      # before that evaluation finishes plays it again; the start's row in metrics.jsonl
      # supersedes the earlier one). None in a run without evaluations.
      eval_mode[0] = 'eval_random'
      timed('eval', eval_driver)(random_policy(act_space['action'], rng), episodes=1)
      eval_mode[0] = 'eval'
      eval_driver.reset()
    if prefill > 0 or int(evals.evaluated) < 0:
      log_times()
      logger.write(int(step))

    dataset = None
    if train_replay.can_sample:
      dataset = iter(_train_dataset(strategy, train_replay, config))
    elif not stop():  # (Stopped during prefill: save and exit below.)
      stats = train_replay.stats
      raise ConfigError(
          f'no episode in the replay reaches replay.minlen={config.replay.minlen} steps '
          f'({stats["loaded_steps"]} steps in {stats["loaded_episodes"]} episodes'
          + (f', {stats["dropped_episodes"]} dropped for NaN/Inf (replay.nonfinite drop)'
             if stats['dropped_episodes'] else '') + '); lower '
          '--replay.minlen (and --replay.maxlen), or collect more with --prefill')
    report_dataset = None
    if not resumed and not stop():
      print(f'Pretraining for {int(config.pretrain)} updates.', flush=True)
      for _ in range(int(config.pretrain)):
        watch(timed('train', agent.train)(timed('replay', next)(dataset)), logger.frames(step))

    should_train = Every(config.train_every)
    should_log = Every(config.log_every)
    train_metrics: dict[str, list] = {}
    timer = {'train_time': 0.0, 'updates': 0}

    def train_step(tran, worker):
      if tran['is_first'] or not should_train(int(step)):
        return
      start = time.time()
      for _ in range(int(config.train_steps)):
        batch = timed('replay', next)(dataset)
        metrics = timed('train', agent.train)(batch)
        watch(metrics, logger.frames(step))
        for key, value in metrics.items():
          train_metrics.setdefault(key, []).append(value)
      timer['train_time'] += time.time() - start
      timer['updates'] += int(config.train_steps)
      estimate.update(int(step))

    def write_period():
      # The means of the period's updates, its train rate and time split.
      for key, values in train_metrics.items():
        # Skipped steps are counted per period; a NaN in a mean is logged as such.
        logger.scalar(key, float(np.sum(values) if key.endswith('_skipped_steps')
                                 else np.mean(values)))
      train_metrics.clear()
      if timer['train_time'] > 0:
        logger.scalar('train_steps_per_s', timer['updates'] / timer['train_time'])
      timer.update(train_time=0.0, updates=0)
      log_times()
      logger.write(int(step), fps=True)

    def log_step(tran, worker):
      # At every agent step, as the paper's train.py (not only at steps that train).
      if not tran['is_first'] and should_log(int(step)):
        write_period()

    train_driver.on_step(train_step)
    train_driver.on_step(log_step)

    def policy(mode):
      return lambda obs, state: _act(agent, obs, state, mode)

    def train_policy(obs, state):
      # Decided at every call, as the paper's Until(expl_until): 0 means explore throughout.
      explore = not config.expl_until or int(step) < config.expl_until
      return _act(agent, obs, state, 'explore' if explore else 'train')

    def save(replace=False):
      if chief and (path := checkpoints.save(int(step), replace)):
        print(f'Saved checkpoint {path}', flush=True)

    def evaluate() -> bool:
      # `eval_eps` episodes with the eval policy, then the world model's open-loop videos;
      # whether they all finished.
      nonlocal report_dataset
      eval_driver.reset()
      videos['eval'] = 0
      bar, done = Progress('Eval', int(config.eval_eps)), 0
      while done < int(config.eval_eps) and not stop():
        done += eval_driver(policy('eval'), episodes=1)[1]
        bar.update(done)
      bar.close()
      if done < int(config.eval_eps):  # Stopped: the resumed run evaluates here again.
        logger.discard('eval_')  # Not a point of the curve: a mean of fewer episodes.
        return False
      evals.done(int(step))
      # Evaluation episodes shorter than the replay's minlen (CartPole can fall in 9 steps)
      # give nothing to sample yet: the eval report then waits for a later evaluation.
      if 'image' in obs_space.spaces and report_dataset is None and eval_replay.can_sample:
        report_dataset = _batches(eval_replay, min(6, config.dataset.batch),
                                  config.dataset.length, config.deterministic)
      for name, source in (('train', dataset), ('eval', report_dataset)):
        if source is not None and 'image' in obs_space.spaces:
          for key, video in agent.report(next(source)).items():
            logger.video(f'{name}_{key}', video)
      return True

    while int(step) < config.steps and not stop():
      if evals.due(int(step)):
        finished = timed('eval', evaluate)()
        logger.write(int(step))
        if finished:  # Saved even if a stop came meanwhile: the evaluation is not redone.
          save(replace=True)  # (A resumed run redoing its checkpoint's step rewrites it.)
      remaining = int(config.steps) - int(step)
      until = evals.steps_to_next(int(step))
      period = remaining if until is None else min(until, remaining)
      train_driver(timed('policy', train_policy), steps=max(period, 1))
    if train_metrics:  # The last period, cut short by the end or a stop, is logged too.
      write_period()
    save()
  logger.write(int(step))
  logger.close()  # (The envs close on the way out, in train().)
  if stop.received:
    print(f'Stopped by {stop.received} at {int(step) * config.action_repeat:,} frames; rerun the '
          'same command to resume.', flush=True)
  return logdir


def _train_dataset(strategy, replay, config: Config):
  """The replay's batches; under a strategy, distributed by the strategy's own input API.

  Each worker samples its own replay: the dataset function runs once per worker and draws the
  share of the global `dataset.batch` that its replicas train on (the strategy also prefetches
  to the devices).
  """
  import tensorflow as tf
  batch, length = config.dataset.batch, config.dataset.length
  if config.strategy == 'default':
    if config.deterministic:
      return _batches(replay, batch, length, True)
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


def _batches(replay, batch: int, length: int, deterministic: bool):
  """An iterator of the replay's batches: sampled in this thread when `deterministic`, else
  in the background by tf.data (whose sampling races the env's additions to the replay)."""
  if deterministic:
    return replay.batches(batch, length)
  return iter(replay.dataset(batch, length))


def _act(agent, obs, state, mode):
  if agent.config.replay.nonfinite == 'drop':  # The episode is dropped; acting goes on.
    obs = finite.sanitize(obs)
  outputs, state = agent.policy(obs, state, mode)
  return outputs['action'], state


def make_envs(env, config: Config, mode: str, count: int, worker: int = 0):
  """A batch environment: the user's env(s) wrapped, or `count` made from the config.

  worker: a multi-worker run's worker index (`distribute.task_index`), which offsets the seed.

  envs_parallel `auto` runs DeepMind Control in worker processes: MuJoCo's EGL renderer
  crashes (SIGSEGV) when it creates its context in a process that has loaded TensorFlow.
  """
  from dreamerv2_tf import envs as envs_lib
  if env is None:
    how = config.envs_parallel
    if how == 'auto':
      how = 'process' if config.task.startswith('dmc_') else 'none'
    if how == 'ale_vector' and not config.task.startswith('atari_'):
      raise ConfigError(f'envs_parallel ale_vector is for Atari tasks, not {config.task!r}')
    seed = config.seed + (0 if mode == 'train' else 10_000) + 1000 * worker
    try:
      return envs_lib.make_batch_env(config.task, count, config, mode=mode, seed=seed,
                                     parallel=how == 'process', fast=how == 'ale_vector')
    except ValueError as e:  # E.g. a gymnasium id that is not registered.
      raise ConfigError(str(e)) from None
  if not hasattr(env, 'obs_space'):
    env = envs_lib.from_env(env, config)
  return env if hasattr(env, 'num_envs') else envs_lib.BatchEnv([env])


def _second_env(env):
  """A separate evaluation env, so evaluating never disturbs a running training episode."""
  spec = getattr(env, 'spec', None)
  if spec is None:
    raise ValueError(f'cannot make an evaluation copy of {type(env).__name__}: it has no '
                     'gymnasium spec; pass eval_env= as well')
  import gymnasium
  return gymnasium.make(spec)
