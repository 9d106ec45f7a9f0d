"""The actor's gradient through *sampled* imagination, this port against the paper's code.

  python -m tests.reference.sampled WORKDIR [--draws 5] [--configs dmc_vision]

From the repository root. The parity harness (`compare.py`) replaces every sample with its mode,
so a gradient that flows through a sample (dynamics backpropagation through the actor's
continuous actions) is compared nowhere there. Here both agents get the same weights (ours,
initialised at seed 0, float32) and the same posterior start states (ours, on a synthetic batch:
64x64x3 images, 6 continuous actions), then each draws the imagined actor-critic loss `--draws`
times with fresh samples and records the actor's gradient norm with the forward metrics. Rows:

- `ours`: the train step's samples (`noise.Noise`: inverse-CDF actions, Gumbel-max latents),
  `actor.dist` `trunc_normal` (TensorFlow's gradient through a sample, as the paper's code);
- `ours_rng`: the same with TensorFlow's RNG (`sample()` without noise; TFP's for latents);
- `ours_exact`: `actor.dist` `trunc_normal_exact` (the exact gradient through a sample);
- `paper`: the paper's code 2.2.0 (tf_keras, in its own process, as `paper.import_reference`).

The spread across draws is the sampling noise; a gap between rows far beyond it is a
difference of the gradient, not of the samples. docs/parity.md has a table of it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

import numpy as np

from tests.reference.cases import variables

ROOT = pathlib.Path(__file__).resolve().parents[2]
METRICS = ('actor_grad_norm', 'actor_ent', 'critic_slow', 'critic_target', 'reward_mean',
           'latent_repeat')


def latent_repeat(stoch, tf):
  """Fraction of imagined latents (steps 2..H) whose class equals the previous step's.

  Independent samples repeat with probability sum(p^2) (about 1/32 for near-uniform latents);
  a random stream that redraws the same values repeats far more often.
  """
  index = tf.argmax(stoch, -1)
  return tf.reduce_mean(tf.cast(tf.equal(index[2:], index[1:-1]), tf.float32))


def _ours(workdir: pathlib.Path, configs: list[str], draws: int) -> None:
  import keras
  import tensorflow as tf
  from dreamerv2_tf import Agent, load_config
  from dreamerv2_tf.noise import Noise
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  from tests.reference.ours import AGENT_KEYS, layer_map
  keras.utils.set_random_seed(0)
  config = load_config(configs, ['--precision', '32'])
  obs_space, act_space = make_spaces(image=(64, 64, 3), actions=6, continuous=True)
  agent = Agent(config, obs_space, act_space)
  weights = variables(layer_map(agent))
  data = make_batch(obs_space, act_space, batch=config.dataset.batch,
                    length=config.dataset.length)
  _, outputs, _ = agent.wm.loss({k: tf.constant(v) for k, v in data.items()},
                                Noise(0, tf.constant(0)))
  start = {k: v.numpy() for k, v in outputs['post'].items()}
  np.savez(workdir / 'inputs.npz', **{f'w/{k}': v.numpy() for k, v in weights.items()},
           **{f'start/{k}': v for k, v in start.items()},
           **{f'batch/{k}': v for k, v in data.items()})
  flat = {k: v for k, v in config.flat.items() if k.split('.')[0] in AGENT_KEYS}
  (workdir / 'config.json').write_text(json.dumps(flat))
  post = {k: tf.constant(v) for k, v in start.items()}
  term = tf.constant(data['is_terminal'])

  # The same weights with the exact gradient through the actor's samples.
  keras.utils.set_random_seed(0)
  exact = Agent(load_config(configs, ['--precision', '32', '--actor.dist', 'trunc_normal_exact']),
                obs_space, act_space)
  for name, var in variables(layer_map(exact)).items():
    var.assign(weights[name])

  def draw_fn(agent, with_noise: bool):
    @tf.function
    def draw(seed):
      with tf.GradientTape() as tape:
        actor_loss, _, metrics = agent.ac.loss(
            agent.wm, post, term, Noise(1, seed) if with_noise else None)
      grads = tape.gradient(actor_loss, agent.ac.actor.trainable_variables)
      # The loss's trajectories are not returned: the latents of another rollout.
      seq = agent.wm.imagine(agent.ac.actor, post, term, agent.config.imag_horizon,
                             Noise(2, seed) if with_noise else None)
      return {**metrics, 'actor_grad_norm': tf.linalg.global_norm(grads),
              'latent_repeat': latent_repeat(seq['stoch'], tf)}
    return lambda i: draw(tf.constant(i, tf.int64))
  _record(draw_fn(agent, True), workdir / 'ours.jsonl', draws)
  _record(draw_fn(agent, False), workdir / 'ours_rng.jsonl', draws)
  _record(draw_fn(exact, True), workdir / 'ours_exact.jsonl', draws)


def _paper(workdir: pathlib.Path, draws: int) -> None:
  from tests.reference.paper import Box, import_reference, load_weights, reference_config
  agent, common, folder = import_reference()
  import tensorflow as tf
  # No global seed (the paper's train.py sets none): with one, every call of its nested
  # tf.function `img_step` redraws the same latent sample (90-95 % of them repeat from step to
  # step of the imagination), which moves the imagined returns and the actor's gradient.
  config = reference_config(common, folder, json.loads((workdir / 'config.json').read_text()))
  inputs = np.load(workdir / 'inputs.npz')
  obs = {'image': Box(0, 1, (64, 64, 3)), **{k: Box(0, 1, ()) for k in (
      'reward', 'is_first', 'is_last', 'is_terminal')}}
  agnt = agent.Agent(config, obs, {'action': Box(-1, 1, (6,))}, 0)
  # The paper's state names the logits `logit`.
  post = {('logit' if k == 'start/logits' else k[6:]): tf.constant(inputs[k])
          for k in inputs.files if k.startswith('start/')}
  term = tf.constant(inputs['batch/is_terminal'])
  behavior = agnt._task_behavior
  # One forward pass creates the paper's layers (as paper.run does); then our weights go in.
  data = {k[6:]: tf.constant(inputs[k]) for k in inputs.files if k.startswith('batch/')}
  _, _, outs, _ = agnt.wm.loss(data)
  for net in (behavior.actor, behavior.critic, behavior._target_critic):
    net(outs['feat'])
  load_weights(agnt, common, inputs)
  reward_fn = lambda seq: agnt.wm.heads['reward'](seq['feat']).mode()

  @tf.function
  def draw():  # The paper's ActorCritic.train up to the actor's gradient, its own methods.
    with tf.GradientTape() as tape:
      seq = agnt.wm.imagine(behavior.actor, post, term, config.imag_horizon)
      seq['reward'], mets1 = behavior.rewnorm(reward_fn(seq))
      target, mets2 = behavior.target(seq)
      actor_loss, mets3 = behavior.actor_loss(seq, target)
    grads = tape.gradient(actor_loss, behavior.actor.trainable_variables)
    return {**{f'reward_{k}': v for k, v in mets1.items()}, **mets2, **mets3,
            'latent_repeat': latent_repeat(seq['stoch'], tf),
            'actor_grad_norm': tf.linalg.global_norm(grads)}
  _record(lambda i: draw(), workdir / 'paper.jsonl', draws)


def _record(draw, path: pathlib.Path, draws: int) -> None:
  with open(path, 'w') as f:
    for i in range(draws):
      f.write(json.dumps({k: float(np.asarray(v)) for k, v in draw(i + 1).items()}) + '\n')


def table(workdir: pathlib.Path) -> str:
  """Markdown: each row's metrics as mean ± sd over its draws."""
  lines = ['| row | ' + ' | '.join(METRICS) + ' |', '| --- |' + ' --- |' * len(METRICS)]
  for row in ('ours', 'ours_rng', 'ours_exact', 'paper'):
    draws = [json.loads(line) for line in (workdir / f'{row}.jsonl').read_text().splitlines()]
    cells = []
    for key in METRICS:
      values = [d[key] for d in draws]
      spread = statistics.stdev(values) if len(values) > 1 else 0.0
      cells.append(f'{statistics.mean(values):.4g} ± {spread:.2g}')
    lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdir', type=pathlib.Path)
  parser.add_argument('--draws', type=int, default=5)
  parser.add_argument('--configs', nargs='+', default=['dmc_vision'])
  parser.add_argument('--side', choices=('ours', 'paper'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.workdir.mkdir(parents=True, exist_ok=True)
  if args.side == 'ours':
    return _ours(args.workdir, args.configs, args.draws)
  if args.side == 'paper':
    return _paper(args.workdir, args.draws)
  run_sides('tests.reference.sampled', [str(args.workdir), '--draws', str(args.draws),
                                         '--configs', *args.configs])
  print(table(args.workdir))


def run_sides(module: str, argv: list[str]) -> None:
  """Runs `python -m module *argv --side S` for ours, then the paper's, each in its own process;
  a failing side exits with the end of its stderr."""
  from tests.reference.compare import side_env
  env = side_env()  # Ours imports keras (so TensorFlow) before the package: see side_env.
  at = argv.index('--') if '--' in argv else len(argv)  # `--side` goes before the overrides.
  for side in ('ours', 'paper'):
    cmd = [sys.executable, '-m', module, *argv[:at], '--side', side, *argv[at:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
      sys.exit(f'{side} side failed (exit {proc.returncode}):\n' +
               '\n'.join(proc.stderr.strip().splitlines()[-20:]))


if __name__ == '__main__':
  main()
