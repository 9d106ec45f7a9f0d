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
  return _Loop(env, config, eval_env, cleanup).run()


class _Loop:
  """One process's run: `__init__` builds the envs, logdir, replays, agent and checkpoints
  (resuming from the latest), `run` goes through the phases of the paper's protocol:

    prefill (random policy) -> random eval episode -> pretrain -> [evaluate, train]... -> save

  Counters are agent steps (`self.step`, the agent's); everything logged is frames.
  """

  def __init__(self, env, config: Config, eval_env, cleanup: list):
    from dreamerv2_tf import cluster
    from dreamerv2_tf import envs as envs_lib

    # Bad input is answered before TensorFlow is imported (~10 s on 2 cores): one line, at once.
    if env is None:
      try:
        config = config.update({'task': envs_lib.task_name(config.task)})
      except ValueError as e:  # An unknown task is bad input: one line, no traceback.
        raise ConfigError(str(e)) from None
    elif eval_env is None:
      eval_env = envs_lib.second_env(env)
    if config.deterministic and config.strategy != 'default':
      raise ConfigError(f'deterministic: true runs with strategy default only, not '
                        f'{config.strategy!r}')
    cluster.check(config.strategy)
    # This process's place among multi-worker workers (0: the chief).
    worker = cluster.task_index(config.strategy)
    # Environments first: a task that cannot be made leaves no logdir behind.
    self.train_env = envs_lib.make_envs(env, config, 'train', config.envs, worker)
    self.eval_env = envs_lib.make_envs(eval_env, config, 'eval', 1, worker)
    try:
      self.chief = worker == 0
      # A resume with another network, or a logdir in use, is also answered before TensorFlow.
      config, self.logdir = prepare_logdir(config, self.chief, worker, cleanup)
      import tensorflow as tf
      from dreamerv2_tf import distribute
      from dreamerv2_tf import precision
      # Devices and the strategy come before any other TensorFlow work (multi-worker needs it).
      device = precision.setup_devices()
      self.strategy = distribute.make_strategy(config.strategy)
    except ValueError as e:  # E.g. a strategy name the Python API was given unchecked.
      self.train_env.close()
      self.eval_env.close()
      raise ConfigError(str(e)) from None
    except BaseException:
      self.train_env.close()
      self.eval_env.close()
      raise
    from dreamerv2_tf.agent import Agent
    from dreamerv2_tf.checkpoints import Checkpoints
    from dreamerv2_tf.divergence import SkipWatch
    from dreamerv2_tf.eta import RunEstimate
    from dreamerv2_tf.logger import Logger
    from dreamerv2_tf.logdir import workdir as worker_dir
    from dreamerv2_tf.replay import Replay
    self.config = config
    cleanup.extend((self.train_env.close, self.eval_env.close))
    _print_setup(config, self.logdir, self.strategy, self.chief, device)

    self.obs_space, self.act_space = self.train_env.obs_space, self.train_env.act_space
    replay_kw = config.replay.to_dict()
    seed = config.seed + 1000 * worker  # Workers explore differently.
    # Every worker acts and keeps its own replay; only the chief writes logs and checkpoints.
    workdir = worker_dir(self.logdir, worker)
    self.train_replay = Replay(workdir / 'train_episodes', seed=seed, **replay_kw)
    cleanup.append(self.train_replay.flush)  # Also on an error's way out.
    self.eval_replay = Replay(
        workdir / 'eval_episodes', seed=seed + 1, nonfinite=replay_kw['nonfinite'],
        capacity=max(replay_kw['capacity'] // 10, 1), minlen=config.dataset.length,
        maxlen=config.dataset.length)
    self.logger = Logger(self.logdir if self.chief else None, config.action_repeat,
                         total_frames=config.steps * config.action_repeat)
    cleanup.append(self.logger.close)
    # On a CPU: how long this run takes at the measured rate, and what to run instead.
    self.estimate = RunEstimate(config.steps, config.action_repeat, cpu=device == 'cpu')
    # For checkpoints older than the saved evaluation step. Read before the agent is built (in a
    # multi-worker run, before the workers' first collective), so that every worker reads the
    # file before the chief can log anything new.
    logged = logged_evaluations(self.logdir / 'metrics.jsonl', config.action_repeat)
    # Seeded before the agent is built: the seed chooses the initial weights too.
    seed_everything(seed)
    if config.deterministic:
      tf.config.experimental.enable_op_determinism()
    self.agent = Agent(config, self.obs_space, self.act_space, strategy=self.strategy)
    # Agent steps: the loop's counter and the clock of the agent's schedules.
    self.step = self.agent.step
    self.evals = EvalSchedule(config.eval_every)  # Saved too: a resume keeps the evaluations.
    self.checkpoints = Checkpoints(
        {'agent': self.agent, 'step': self.step, 'evaluated': self.evals.evaluated},
        self.logdir / 'checkpoints', self.agent.weights_, added=['evaluated'])
    self.resumed = self._resume(logged)
    # Updates skipped for a non-finite loss or gradient: too many in a row stop the run.
    self.watch = SkipWatch(config.skip_limit, lambda: self.checkpoints.latest)
    # Seeding with the step keeps a resumed run reproducible from its checkpoint.
    seed_everything(seed + int(self.step))
    self.rng = np.random.default_rng(seed + int(self.step))
    self._build_drivers()
    self.dataset, self.report_dataset = None, None
    self.train_metrics: dict[str, list] = {}
    self.timer = {'train_time': 0.0, 'updates': 0}
    self.saved_at = time.monotonic()  # For checkpoint_minutes.

  def _resume(self, logged: list[int]) -> str | None:
    """Restores the latest checkpoint if there is one; marks the start in metrics.jsonl."""
    step, evals, repeat = self.step, self.evals, self.config.action_repeat
    # Read once: in a multi-worker run the chief may save while another worker starts up.
    resumed = self.checkpoints.latest
    if resumed:
      if self.checkpoints.restore(resumed):  # Saved before `evaluated` was: from metrics.jsonl.
        evals.recover(logged, int(step))
      until = evals.steps_to_next(int(step))
      print(f'Resumed from {resumed} at {int(step) * repeat:,} frames; replay holds '
            f'{self.train_replay.stats["loaded_steps"]:,} steps'
            + ('' if until is None else
               f'; next evaluation at {(int(step) + until) * repeat:,} frames'), flush=True)
    # Supersedes what an earlier process logged past its checkpoint (it is logged again).
    self.logger.started(int(step), evals.last)
    return resumed

  def _build_drivers(self) -> None:
    import types

    from dreamerv2_tf.driver import Driver
    from dreamerv2_tf.timeshare import TimeShare
    # Where the wall time goes, logged at every periodic write (see timeshare.py).
    self.times = TimeShare()
    timed = self.timed = self.times.timed
    self.videos = 0  # Policy videos logged in this evaluation.
    # The driver only resets and steps its env: a namespace of the timed methods is enough.
    env = types.SimpleNamespace(reset=timed('env', self.train_env.reset),
                                step=timed('env', self.train_env.step))
    self.train_driver = Driver(env, self.act_space['action'])
    self.train_driver.on_step(self._count_step)
    self.train_driver.on_step(timed('replay', self.train_replay.add_step))
    self.train_driver.on_episode(lambda ep, w: self._log_episode(ep, 'train'))
    self.eval_driver = Driver(self.eval_env, self.act_space['action'])
    # Step by step, as training's: non-finite data is caught before it reaches the policy.
    self.eval_driver.on_step(self.eval_replay.add_step)
    self.eval_mode = 'eval'  # 'eval_random' while it plays the random episode after prefill.
    self.eval_driver.on_episode(lambda ep, w: self._log_episode(ep, self.eval_mode))

  # --- The phases ------------------------------------------------------------------------

  def run(self) -> pathlib.Path:
    step, logger = self.step, self.logger
    with StopSignal() as stop:
      self.stop = self.train_driver.stop = self.eval_driver.stop = stop
      prefilled = self.prefill()
      played = self.random_episode()
      if prefilled or played:
        self._log_times()
        logger.write(int(step))
      self.dataset = self._train_dataset()
      if not self.resumed and not stop():
        self.pretrain()
      self.train()
      self.save()
      # The running episodes' steps, as files a resume loads: no interaction is lost.
      kept = self.train_replay.flush()
    logger.write(int(step))
    logger.close()  # (The envs close on the way out, in train().)
    if stop.received:
      print(f'Stopped by {stop.received} at {int(step) * self.config.action_repeat:,} frames '
            f'(running episodes: {kept:,} steps stored); rerun the same command to resume.',
            flush=True)
    return self.logdir

  def prefill(self) -> bool:
    """As the paper's prefill: `prefill` agent steps (counting those stored) and at least one
    whole episode with the random policy; whether there was any to do."""
    from dreamerv2_tf.driver import random_policy
    from dreamerv2_tf.logger import Progress
    stats = self.train_replay.stats
    # Agent steps stored, as the paper counts them: an episode's first transition is no step.
    prefill = int(self.config.prefill) - (stats['total_steps'] - stats['total_episodes'])
    if prefill <= 0:
      return False
    if self.stop():
      return True
    bar, done, episodes = Progress('Prefill', prefill), 0, 0
    random = self.timed('policy', random_policy(self.act_space['action'], self.rng))
    while (done < prefill or not episodes) and not self.stop():
      more = self.train_driver(random, steps=min(500, prefill - done),
                               episodes=int(done >= prefill))
      done, episodes = done + more[0], episodes + more[1]
      bar.update(min(done, prefill))
    bar.close()
    return True

  def random_episode(self) -> bool:
    """As the paper's train.py after its prefill: an episode of the random policy in the eval
    env; whether it is due (before the first evaluation). Its curves hold it in their first bin
    (it logs it as eval_return); here it is eval_random_return, which compare.py bins with the
    evaluations as the paper's files do. Before the first evaluation only, so that it never
    lands in a later bin (a stop before that evaluation finishes plays it again; the start's row
    in metrics.jsonl supersedes the earlier one). None in a run without evaluations."""
    from dreamerv2_tf.driver import random_policy
    if self.evals.last is not None:
      return False
    if self.evals.every > 0 and not self.stop():
      self.eval_mode = 'eval_random'
      self.timed('eval', self.eval_driver)(
          random_policy(self.act_space['action'], self.rng), episodes=1)
      self.eval_mode = 'eval'
      self.eval_driver.reset()
    return True

  def _train_dataset(self):
    from dreamerv2_tf import distribute
    if self.train_replay.can_sample:
      return iter(distribute.train_dataset(self.strategy, self.train_replay, self.config))
    if self.stop():  # Stopped during prefill: save and exit.
      return None
    stats, config = self.train_replay.stats, self.config
    raise ConfigError(
        f'no episode in the replay reaches replay.minlen={config.replay.minlen} steps '
        f'({stats["loaded_steps"]} steps in {stats["loaded_episodes"]} episodes'
        + (f', {stats["dropped_episodes"]} dropped for NaN/Inf (replay.nonfinite drop)'
           if stats['dropped_episodes'] else '') + '); lower '
        '--replay.minlen (and --replay.maxlen), or collect more with --prefill')

  def pretrain(self) -> None:
    print(f'Pretraining for {int(self.config.pretrain)} updates.', flush=True)
    for _ in range(int(self.config.pretrain)):
      self._update()

  def train(self) -> None:
    """Evaluates when due, and acts and trains in between, until `steps` or a stop."""
    config, step, evals, stop = self.config, self.step, self.evals, self.stop
    self.should_train = Every(config.train_every)
    self.should_log = Every(config.log_every)
    self.train_driver.on_step(self._train_step)
    self.train_driver.on_step(self._log_step)
    policy = self.timed('policy', self._train_policy)
    while int(step) < config.steps and not stop():
      if evals.due(int(step)):
        finished = self.timed('eval', self.evaluate)()
        self.logger.write(int(step))
        if finished:  # Saved even if a stop came meanwhile: the evaluation is not redone.
          self.save(replace=True)  # (A resumed run redoing its checkpoint's step rewrites it.)
      remaining = int(config.steps) - int(step)
      until = evals.steps_to_next(int(step))
      period = remaining if until is None else min(until, remaining)
      self.train_driver(policy, steps=max(period, 1))
    if self.train_metrics:  # The last period, cut short by the end or a stop, is logged too.
      self._write_period()

  def evaluate(self) -> bool:
    """`eval_eps` episodes with the eval policy, then the world model's open-loop videos;
    whether they all finished."""
    from dreamerv2_tf.logger import Progress
    config, logger = self.config, self.logger
    self.eval_driver.reset()
    self.videos = 0
    bar, done = Progress('Eval', int(config.eval_eps)), 0
    policy = lambda obs, state: _act(self.agent, obs, state, 'eval')  # noqa: E731
    while done < int(config.eval_eps) and not self.stop():
      done += self.eval_driver(policy, episodes=1)[1]
      bar.update(done)
    bar.close()
    if done < int(config.eval_eps):  # Stopped: the resumed run evaluates here again.
      logger.discard('eval_')  # Not a point of the curve: a mean of fewer episodes.
      return False
    self.evals.done(int(self.step))
    if 'image' not in self.obs_space.spaces:
      return True
    # Evaluation episodes shorter than the replay's minlen (CartPole can fall in 9 steps)
    # give nothing to sample yet: the eval report then waits for a later evaluation.
    if self.report_dataset is None and self.eval_replay.can_sample:
      self.report_dataset = _batches(self.eval_replay, min(6, config.dataset.batch),
                                     config.dataset.length, config.deterministic)
    for name, source in (('train', self.dataset), ('eval', self.report_dataset)):
      if source is not None:
        for key, video in self.agent.report(next(source)).items():
          logger.video(f'{name}_{key}', video)
    return True

  def save(self, replace: bool = False) -> None:
    if self.chief and (path := self.checkpoints.save(int(self.step), replace)):
      print(f'Saved checkpoint {path}', flush=True)
    self.saved_at = time.monotonic()

  # --- Called by the drivers -------------------------------------------------------------

  def _count_step(self, tran, worker):
    if not tran['is_first']:
      self.step.assign_add(1)

  def _train_policy(self, obs, state):
    # Decided at every call, as the paper's Until(expl_until): 0 means explore throughout.
    expl_until = self.config.expl_until
    explore = not expl_until or int(self.step) < expl_until
    return _act(self.agent, obs, state, 'explore' if explore else 'train')

  def _update(self) -> dict:
    metrics = self.timed('train', self.agent.train)(self.timed('replay', next)(self.dataset))
    self.watch(metrics, self.logger.frames(self.step))
    return metrics

  def _train_step(self, tran, worker):
    if tran['is_first'] or not self.should_train(int(self.step)):
      return
    start = time.time()
    for _ in range(int(self.config.train_steps)):
      for key, value in self._update().items():
        self.train_metrics.setdefault(key, []).append(value)
    self.timer['train_time'] += time.time() - start
    self.timer['updates'] += int(self.config.train_steps)
    self.estimate.update(int(self.step))
    # Between evaluations too: on a CPU an evaluation period can be hours of training.
    minutes = float(self.config.checkpoint_minutes)
    if minutes and time.monotonic() - self.saved_at >= 60 * minutes:
      self.save()  # (Its time counts as time_share_other.)

  def _log_step(self, tran, worker):
    # At every agent step, as the paper's train.py (not only at steps that train).
    if not tran['is_first'] and self.should_log(int(self.step)):
      self._write_period()

  def _write_period(self) -> None:
    # The means of the period's updates, its train rate and time split.
    logger, timer = self.logger, self.timer
    for key, values in self.train_metrics.items():
      # Skipped steps are counted per period; a NaN in a mean is logged as such.
      logger.scalar(key, float(np.sum(values) if key.endswith('_skipped_steps')
                               else np.mean(values)))
    self.train_metrics.clear()
    if timer['train_time'] > 0:
      logger.scalar('train_steps_per_s', timer['updates'] / timer['train_time'])
    timer.update(train_time=0.0, updates=0)
    self._log_times()
    logger.write(int(self.step), fps=True)

  def _log_times(self) -> None:
    for mode, replay in (('train', self.train_replay), ('eval', self.eval_replay)):
      if replay.stats['dropped_episodes']:  # Since the start of this process.
        self.logger.scalar(f'{mode}_dropped_episodes', replay.stats['dropped_episodes'])
    self.times.log(self.logger, self.train_env.num_envs * self.config.action_repeat)

  def _log_episode(self, ep: dict, mode: str) -> None:
    if finite.first_nonfinite(ep) is not None:
      return  # Dropped by the replay (replay.nonfinite drop): counted, not averaged.
    logger, config = self.logger, self.config
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
    if mode == 'eval' and self.videos == 0:
      for key in config.log_keys_video:
        if key in ep and ep[key].ndim == 4:
          logger.video(f'eval_policy_{key}', ep[key][:1000])  # Bounded: Atari runs 27k steps.
      self.videos += 1


def _print_setup(config: Config, logdir, strategy, chief: bool, device: str) -> None:
  from dreamerv2_tf import precision
  print(f'Logdir: {logdir}', flush=True)
  print(f'Strategy: {config.strategy}, {strategy.num_replicas_in_sync} replica(s)'
        f'{"" if chief else "; not the chief: no logs or checkpoints"}', flush=True)
  policy_name = precision.resolve(config.precision)
  why = f' ({precision.auto_precision()[1]})' if str(config.precision) == 'auto' else ''
  print(f'Device: {device}; precision {config.precision} -> {policy_name}{why}; '
        f'tf.function {config.jit}; XLA for the train step {config.xla}, for the policy '
        f'{precision.policy_xla(config.policy_xla, policy_name) and config.jit}', flush=True)
  print(config, flush=True)


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
