"""How far a run's gradients move under reduced precision, against the noise SGD already has.

  python scripts/precision_check.py --logdir LOGDIR [--checkpoint N] [--precisions bf16 16]
                                    [--batches 3] [--seed 0] [--json out.json]

Restores one checkpoint of a run once per precision, samples batches from the run's replay,
and computes the world model's, the actor's and the critic's gradients without applying them,
with the same batch and the same sampling noise in every precision. Each precision's gradient
is compared with float32's on the same batch and noise (cosine, and the norm of the difference
relative to float32's norm). Two yardsticks say what such a difference means for learning:
float32 on the same batch with other sampling noise, and float32 on another batch; both are
differences that training with the paper's settings takes in its stride at every update. A
precision whose difference is far below both cannot be what makes a run learn differently.

Size alone does not settle it: sampling noise averages out over updates, a rounding error that
is the same at every update adds up. So each difference also gets its correlation across
batches (the mean cosine between the differences of consecutive batches): near 0 for noise
(the other-noise yardstick shows how near, with these batches), near 1 for a bias.

`16` (mixed float16) is the paper's GPU precision. On a CPU it is emulated: seconds per gradient
with the `debug` preset's networks, but one gradient at `dmc_vision` sizes did not finish in
9 minutes on a 2-core Xeon, so the default compares bf16 only. It is computed with the loss
scaled as the optimizer's dynamic scale does: 2^15, halved while a gradient overflows.

Reads the logdir only; it writes nothing there.
"""
import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.errors import main_guard  # noqa: E402

NETS = ('model', 'actor', 'critic')


def gradient_fn(agent, seed: int):
  """A traced `(batch, draw) -> ({net: flat gradient}, {net: loss})` of one batch.

  The sampling noise is that of update `draw` of a run with `seed` (see noise.py).
  """
  import numpy as np
  import tensorflow as tf
  from dreamerv2_tf.noise import Noise

  def fn(data, draw, scale):
    noise = Noise(seed, draw)
    data = agent.wm.preprocess(data)
    with tf.GradientTape() as tape:
      model_loss, outputs, _ = agent.wm.loss(data, noise)
      scaled = model_loss * scale
    model = tape.gradient(scaled, agent.wm.trainable_variables_)
    with tf.GradientTape(persistent=True) as tape:
      actor_loss, critic_loss, _ = agent.ac.loss(agent.wm, outputs['post'], data['is_terminal'],
                                                 noise)
      scaled = actor_loss * scale, critic_loss * scale
    actor = tape.gradient(scaled[0], agent.ac.actor.trainable_variables)
    critic = tape.gradient(scaled[1], agent.ac.critic.trainable_variables)
    flat = lambda grads: tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) / scale
                                    for g in grads], 0)
    return ({'model': flat(model), 'actor': flat(actor), 'critic': flat(critic)},
            {'model': model_loss, 'actor': actor_loss, 'critic': critic_loss})

  traced = tf.function(fn, autograph=False)

  def call(batch, draw: int):
    # Float16 as the optimizer's dynamic loss scale runs it: from 2^15, halved while any
    # gradient overflows (the step is skipped and retried on the next batch in training).
    scale = 2.0 ** 15 if agent.dtype == 'mixed_float16' else 1.0
    while True:
      grads, losses = traced(batch, tf.constant(draw, tf.int64), tf.constant(scale))
      grads = {k: v.numpy().astype('float64') for k, v in grads.items()}
      if scale == 1.0 or all(np.isfinite(g).all() for g in grads.values()):
        return grads, {k: float(v) for k, v in losses.items()}
      scale /= 2
  return call


def networks(agent) -> list:
  """The variables a gradient depends on: every network weight, the counters of schedules."""
  ac = agent.ac
  return ([v for m in agent.wm.modules_ for v in m.variables] + list(ac.actor.variables)
          + list(ac.critic.variables) + list(ac.target_critic.variables)
          + [ac.rewnorm.mag, agent.step])


def compare(grad, reference) -> tuple[float, float]:
  """(cosine, |grad - reference| / |reference|)."""
  import numpy as np
  norm = np.linalg.norm(reference)
  cos = float(grad @ reference / (np.linalg.norm(grad) * norm))
  return cos, float(np.linalg.norm(grad - reference) / norm)


def correlation(diffs) -> float:
  """Mean cosine between consecutive `diffs` (differences of batch i and i + 1, cyclic for more
  than two): about 0 for independent noise, 1 for the same error every time."""
  import numpy as np
  pairs = [(diffs[i], diffs[i + 1]) for i in range(len(diffs) - 1)]
  if len(diffs) > 2:
    pairs.append((diffs[-1], diffs[0]))
  return float(np.mean([compare(a, b)[0] for a, b in pairs]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--checkpoint', default=None, help='number or path; default: the latest')
  parser.add_argument('--precisions', nargs='+', default=['bf16'],
                      help='compared with float32 (32); allowed: bf16, 16')
  parser.add_argument('--batches', type=int, default=3, help='batches averaged over')
  parser.add_argument('--seed', type=int, default=0, help='replay sampling and noise')
  parser.add_argument('--json', default=None, help='also write the rows as JSON')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  for precision in args.precisions:
    if precision not in ('bf16', '16'):
      parser.error(f'--precisions: {precision!r} is not one of bf16, 16 (float32 is the '
                   'reference)')
  if args.batches < 2:
    parser.error(f'--batches must be at least 2 (one yardstick is another batch), got '
                 f'{args.batches}')
  import numpy as np
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.evaluate import check_logdir, find_checkpoint, load_run, saved_config
  from dreamerv2_tf.envs import make_envs
  from dreamerv2_tf.replay import Replay
  logdir = check_logdir(args.logdir)
  config = saved_config(logdir / 'config.yaml')
  path = find_checkpoint(logdir, args.checkpoint)
  # Single-worker runs keep their episodes here (loop.py).
  replay = Replay(logdir / 'train_episodes', seed=args.seed,
                  **{**config.replay.to_dict(), 'nonfinite': 'drop'})
  sampler = replay.batches(config.dataset.batch, config.dataset.length)
  batches = [next(sampler) for _ in range(args.batches)]
  env = make_envs(None, config, 'eval', 1)
  n = args.batches
  try:
    results, losses = {}, {}
    _, reference, _, frames = load_run(logdir, path, [('precision', '32')], env)
    for precision in ['32'] + args.precisions:
      if precision == '32':
        agent = reference
      else:  # The checkpoint holds no loss scale for float16: copy the weights instead.
        agent = Agent(config.update({'precision': precision}), env.obs_space, env.act_space)
        for src, dst in zip(networks(reference), networks(agent), strict=True):
          if src.shape != dst.shape:
            raise RuntimeError(f'{src.name} {src.shape} vs {dst.name} {dst.shape}')
          dst.assign(src)
      grad = gradient_fn(agent, args.seed)
      for i, batch in enumerate(batches):
        start = time.time()
        results[precision, i, 0], losses[precision, i] = grad(batch, 0)
        if precision == '32':  # The yardstick: the same batch with other noise.
          results['32', i, 1], _ = grad(batch, 1)
        print(f'precision {precision}, batch {i + 1}/{n}: {time.time() - start:.0f} s',
              file=sys.stderr, flush=True)
  finally:
    env.close()
  print(f'Checkpoint {path} ({frames:,} frames); {args.batches} batches of '
        f'{config.dataset.batch} x {config.dataset.length}; means over the batches.\n')
  print('| net | compared with float32 on the same batch and noise | cosine | '
        '|difference| / |float32| | difference, correlation across batches | '
        'loss (float32: loss) |')
  print('| --- | --- | --- | --- | --- | --- |')
  table = []
  for net in NETS:
    reference = [results['32', i, 0][net] for i in range(n)]
    other = [results['32', i, 1][net] for i in range(n)]
    rows = [('float32, other sampling noise', [compare(o, r) for o, r in zip(other, reference)],
             correlation([o - r for o, r in zip(other, reference)]), None),
            ('float32, the next batch',
             [compare(reference[(i + 1) % n], reference[i]) for i in range(n)], None, None)]
    for precision in args.precisions:
      name = {'bf16': 'mixed bfloat16', '16': 'mixed float16'}[precision]
      grads = [results[precision, i, 0][net] for i in range(n)]
      rows.append((name, [compare(g, r) for g, r in zip(grads, reference)],
                   correlation([g - r for g, r in zip(grads, reference)]),
                   [np.mean([losses[p, i][net] for i in range(n)]) for p in (precision, '32')]))
    for name, values, corr, loss in rows:
      cos, rel = np.mean(values, 0)
      table.append({'net': net, 'compared': name, 'cosine': float(cos), 'relative': float(rel),
                    'correlation': corr,
                    'loss': None if loss is None else float(loss[0]),
                    'loss_float32': None if loss is None else float(loss[1])})
      loss = '' if loss is None else f'{loss[0]:.5g} ({loss[1]:.5g})'
      corr = '' if corr is None else f'{corr:.2f}'
      print(f'| {net} | {name} | {cos:.4f} | {rel:.3g} | {corr} | {loss} |')
  if args.json:
    import json
    from dreamerv2_tf.files import write_text_atomic
    write_text_atomic(args.json, json.dumps({'checkpoint': path, 'frames': frames,
                                             'rows': table}, indent=2) + '\n')


if __name__ == '__main__':
  main_guard(main)
