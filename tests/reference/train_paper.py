"""The paper's own agent trained on a task, for a learning curve beside this port's.

  python -m tests.reference.train_paper --configs dmc_vision --task dmc_walker_walk \
      --logdir LOGDIR --steps 5e4 [--precision 32] [--seed 0]

From the repository root. Trains the agent of `dreamerv2==2.2.0` (imported unmodified as the
parity harness does, `paper.import_reference`) with its own `Replay`, `Driver`, counters and
`Logger`, on the schedule of its `train.py`: prefill with its random agent (at least one
episode), one random-agent episode in the eval env, one update that builds the variables and
`pretrain` more, then `eval_eps` evaluation episodes every `eval_every` agent steps with
training in between (an update every `train_every` agent steps). `metrics.jsonl` is written by
the paper's own `Logger` (frames as `step`, the random episode as an `eval_return`), so
`scripts/plot.py --indir paper_code=LOGDIR ...` draws the run like one of ours.

What differs from the paper's `train.py`, none of it inside the agent:
- the environments are this port's (`dreamerv2_tf.envs`), each in a worker process (MuJoCo's
  EGL renderer and TensorFlow cannot share one here), with the paper's config's action repeat,
  image size, camera and time limit;
- the optimizers are `tf.keras.optimizers.legacy.Adam`, the OptimizerV2 class the paper ran on,
  as in the parity harness (tf_keras 2.21's `tf.optimizers.Adam` is a newer class);
- `--precision 32` by default: the paper's 16 (mixed float16) is emulated on a CPU and far too
  slow; no GPU here. Mixed bfloat16 is not offered: TensorFlow's CPU kernel sums bias gradients
  in bfloat16, which this port had to work around (docs/parity.md);
- a stop (SIGTERM, Ctrl-C) saves the agent (`variables.pkl`, written atomically, and Adam's
  state in `optimizers.pkl`, which the paper's `save` leaves out) and the step of
  the last finished evaluation (`schedule.json`); the same command resumes from the last stored
  episode (the paper's script counts steps from them) and evaluates where the run would have
  without the stop. The paper's script saves after each evaluation period only and evaluates
  again on every resume. A stop during the random-agent episode after prefill skips it (as the
  paper's script would); a stop during the pretraining updates comes before any save, so the
  resume runs them again;
- no report videos (open-loop predictions) and no TensorBoard output; the run stops at `--steps`
  (the paper's loop finishes its last evaluation period); numpy is seeded, TensorFlow is not
  (as the paper's script: a global seed makes its imagined latent samples repeat).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import pickle
import signal
import sys

import numpy as np

from dreamerv2_tf.files import write_atomic, write_text_atomic
from tests.reference.paper import import_reference


class _Stopped(Exception):
  """Raised from a driver callback once a stop signal came."""


class PaperEnv:
  """One of this port's environments in a worker process, with the paper's env interface:
  `reset()` and `step({'action': a})` return one observation dict; `obs_space`, `act_space`."""

  def __init__(self, task: str, config, mode: str, seed: int):
    from dreamerv2_tf.envs import make_batch_env
    self._batch = make_batch_env(
        task, 1, None, mode, seed=seed, parallel=True, action_repeat=int(config.action_repeat),
        render_size=tuple(config.render_size), dmc_camera=int(config.dmc_camera),
        time_limit=int(config.time_limit))
    self.obs_space, self.act_space = self._batch.obs_space, self._batch.act_space

  def reset(self) -> dict:
    return {k: v[0] for k, v in self._batch.reset().items()}

  def step(self, action: dict) -> dict:
    obs = self._batch.step({'action': np.asarray(action['action'])[None]})
    return {k: v[0] for k, v in obs.items()}

  def close(self) -> None:
    self._batch.close()


def make_config(common, folder: pathlib.Path, args) -> object:
  from ruamel.yaml import YAML
  configs = YAML(typ='safe').load((folder / 'configs.yaml').read_text())
  unknown = [name for name in args.configs if name not in configs]
  if unknown:
    raise SystemExit(f"error: --configs {' '.join(unknown)}: not in the paper's configs.yaml; "
                     f"allowed: {', '.join(configs)}")
  config = common.Config(configs['defaults'])
  for name in args.configs:
    config = config.update(configs[name])
  return config.update({'task': args.task, 'logdir': str(args.logdir), 'steps': args.steps,
                        'precision': args.precision, 'seed': args.seed})


def train(args) -> None:
  agent_module, common, folder = import_reference()
  import tensorflow as tf
  config = make_config(common, folder, args)
  logdir = pathlib.Path(args.logdir).expanduser()
  logdir.mkdir(parents=True, exist_ok=True)
  from ruamel.yaml import YAML
  with open(logdir / 'config.yaml', 'w') as f:  # (The paper's `save` needs an older ruamel.)
    YAML(typ='safe', pure=True).dump(json.loads(json.dumps(dict(config))), f)
  tf.config.run_functions_eagerly(not config.jit)
  np.random.seed(args.seed)
  # TensorFlow stays unseeded, as in the paper's train.py: with a global seed, every call of
  # its nested tf.function `img_step` redraws the same latent sample (docs/parity.md).
  if config.precision == 16:
    tf.keras.mixed_precision.set_global_policy('mixed_float16')

  train_replay = common.Replay(logdir / 'train_episodes', **config.replay)
  eval_replay = common.Replay(logdir / 'eval_episodes', capacity=config.replay.capacity // 10,
                              minlen=config.dataset.length, maxlen=config.dataset.length)
  # Agent steps, recovered from the stored episodes on a resume (as the paper's script does).
  step = common.Counter(train_replay.stats['total_steps'])
  logger = common.Logger(step, [common.TerminalOutput(), common.JSONLOutput(logdir)],
                         multiplier=config.action_repeat)
  schedule_path = logdir / 'schedule.json'
  evaluated = json.loads(schedule_path.read_text())['evaluated'] if schedule_path.exists() else None

  stop = {'signal': None}

  def on_signal(signum, frame):
    stop['signal'] = signal.Signals(signum).name
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)

  def check_stop(*_, **__):
    if stop['signal']:
      raise _Stopped()

  def per_episode(ep, mode):
    logger.scalar(f'{mode}_return', float(ep['reward'].astype(np.float64).sum()))
    logger.scalar(f'{mode}_length', len(ep['reward']) - 1)
    logger.write()

  envs = [PaperEnv(args.task, config, 'train', args.seed),
          PaperEnv(args.task, config, 'eval', args.seed + 1)]
  try:
    train_driver = common.Driver([envs[0]])
    train_driver.on_episode(lambda ep: per_episode(ep, 'train'))
    train_driver.on_step(lambda tran, worker: step.increment())
    train_driver.on_step(train_replay.add_step)
    train_driver.on_reset(train_replay.add_step)
    eval_driver = common.Driver([envs[1]])
    eval_driver.on_episode(lambda ep: per_episode(ep, 'eval'))
    eval_driver.on_episode(eval_replay.add_episode)
    eval_driver.on_step(check_stop)
    # Checked after each env step: on a resume the stored episodes set the step counter, so
    # the unfinished episode is collected again (the weights keep every update).
    train_driver.on_step(check_stop)

    prefill = max(0, int(config.prefill) - train_replay.stats['total_steps'])
    if prefill:
      print(f'Prefill: {prefill} agent steps.', flush=True)
      random_agent = common.RandomAgent(envs[0].act_space)
      train_driver(random_agent, steps=prefill, episodes=1)
      eval_driver(random_agent, episodes=1)  # The paper's curves hold it in their first bin.
      train_driver.reset()
      eval_driver.reset()

    dataset = iter(train_replay.dataset(**config.dataset))
    agnt = agent_module.Agent(config, envs[0].obs_space, envs[0].act_space, step)
    opts = (agnt.wm.model_opt, agnt._task_behavior.actor_opt, agnt._task_behavior.critic_opt)
    for opt, block in zip(opts, (config.model_opt, config.actor_opt, config.critic_opt)):
      opt._opt = tf.keras.optimizers.legacy.Adam(block.lr, epsilon=block.eps)
    train_agent = common.CarryOverState(agnt.train)
    train_agent(next(dataset))  # Builds the variables (an update, as in the paper's script).
    # Adam's moments and counters too (the paper's `save` holds the networks only).
    slots = [v for opt in opts for v in opt._opt.variables()]
    if (logdir / 'variables.pkl').exists():
      agnt.load(logdir / 'variables.pkl')
      with open(logdir / 'optimizers.pkl', 'rb') as f:
        for var, value in zip(slots, pickle.load(f), strict=True):
          var.assign(value)
    else:
      print(f'Pretrain: {int(config.pretrain)} updates.', flush=True)
      for _ in range(int(config.pretrain)):
        check_stop()  # Else a stop waits for every pretraining update (20 min on an AVX2 CPU).
        train_agent(next(dataset))

    should_train, should_log = common.Every(config.train_every), common.Every(config.log_every)
    should_expl = common.Until(config.expl_until)
    metrics = {}

    def train_step(tran, worker):
      if should_train(step):
        for _ in range(int(config.train_steps)):
          for key, value in train_agent(next(dataset)).items():
            metrics.setdefault(key, []).append(value)
      if should_log(step):
        for key, values in metrics.items():
          logger.scalar(key, np.array(values, np.float64).mean())
        metrics.clear()
        logger.write(fps=True)
    train_driver.on_step(train_step)
    train_policy = lambda *a: agnt.policy(*a, mode='explore' if should_expl(step) else 'train')
    eval_policy = lambda *a: agnt.policy(*a, mode='eval')
    every, steps = int(config.eval_every), int(config.steps)

    def save():
      write_atomic(logdir / 'optimizers.pkl',
                   lambda f: pickle.dump([v.numpy() for v in slots], f))
      # The format of the paper's `save` (which its `load` reads), written atomically.
      write_atomic(logdir / 'variables.pkl', lambda f: pickle.dump(
          tf.nest.map_structure(lambda v: v.numpy(), agnt.variables), f))
      write_text_atomic(schedule_path, json.dumps({'evaluated': evaluated}))

    try:
      while int(step) < steps:
        if evaluated is None or int(step) >= evaluated + every:
          logger.write()
          eval_driver(eval_policy, episodes=int(config.eval_eps))
          evaluated = int(step)
          save()
        until = evaluated + every - int(step)
        train_driver(train_policy, steps=min(until, steps - int(step)))
      save()
    except _Stopped:
      save()
      print(f'Stopped by {stop["signal"]} at {int(step) * config.action_repeat:,} frames; rerun '
            'the same command to resume.', flush=True)
  except _Stopped:  # During prefill or pretraining: the stored episodes are the state.
    print(f'Stopped by {stop["signal"]} before the first evaluation; rerun the same command to '
          'resume (the pretraining updates run again).', flush=True)
  finally:
    for env in envs:
      env.close()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=['dmc_vision'])
  parser.add_argument('--task', required=True)
  parser.add_argument('--logdir', required=True, type=pathlib.Path)
  parser.add_argument('--steps', type=float, required=True, help='agent steps')
  parser.add_argument('--precision', type=int, default=32, choices=(16, 32))
  parser.add_argument('--seed', type=int, default=0)
  train(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
  main()
