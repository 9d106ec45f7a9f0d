"""The train step's heavy parts timed alone, under every kernel choice TensorFlow offers here.

  python scripts/kernel_ceiling.py                          # atari preset, 5 repeats
  python scripts/kernel_ceiling.py --configs atari debug --repeats 2   # quick smoke run

Answers "would another kernel run this step faster?" for the parts that hold nine tenths of the
step's FLOPs, each run on its own, forward and backward, at the step's own shapes:
  encoder   the convolutions on the batch's B*T images (gradients of the weights),
  decoder   the transposed convolutions back to B*T images (weights and input),
  heads     one 4-layer MLP head on the B*T*(H+1) imagined states (weights and input),
  gemm      one matmul chain of the heads' FLOPs at a large square shape: what the CPU's matmul
            kernel reaches when shapes are not the limit.
Each part runs under each variant: float32 and bfloat16, tf.function and XLA (jit_compile),
and for the convolutions the Keras layers as well as the default patch/fast-deconvolution
path. GFLOP/s are from the analytic counts of `dreamerv2_tf/flops.py` (backward = 2x forward).
The `ceiling` line divides the step's FLOPs, per part, by the best rate any variant reached on
it: no step built from these kernels can be faster than that, before casts and elementwise ops.
The batch-1 policy step (`policy`, under each precision) is split the same way: the whole
step as the agent runs it, the encoder on one image, one matrix-vector product with every dense
kernel the step reads (the RSSM's posterior path and the actor), and an empty tf.function call
(+plain variants time only the encoder, through the Keras convolutions).
At batch 1 the kernels are bound by reading the weights, not by FLOPs.
Prints a table to stderr and JSON to stdout; other arguments override config keys.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.config import load_config, main_guard  # noqa: E402

VARIANTS = ('32', 'bf16', '32+xla', 'bf16+xla', '32+plain', 'bf16+plain')


def timed(fn, repeats: int) -> float:
  """Median seconds of `fn()` after one warm-up call (trace, compile)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def parts(tf, agent, config, xla: bool) -> dict:
  """{part: (step function, GFLOP)}: forward + backward of each heavy part at the step's shapes."""
  from dreamerv2_tf import flops
  wm, ac = agent.wm, agent.ac
  n = config.dataset.batch * config.dataset.length
  states = n * (config.imag_horizon + 1)
  shape = wm.encoder.shapes['image']
  images = tf.random.uniform((n, *shape), -0.5, 0.5)
  feat = tf.random.normal((n, wm.rssm.feat_size))
  imag_feat = tf.random.normal((states, wm.rssm.feat_size))
  compile_ = lambda f: tf.function(f, jit_compile=xla)

  def grads(module, loss_fn, *inputs):
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      loss = loss_fn()
    return tape.gradient(loss, [*module.trainable_variables, *inputs])

  @compile_
  def encoder():
    return grads(wm.encoder, lambda: tf.reduce_sum(
        tf.cast(wm.encoder({'image': images}), tf.float32)))

  @compile_
  def decoder():
    return grads(wm.heads['decoder'], lambda: tf.reduce_sum(
        tf.cast(wm.heads['decoder'](feat)['image'].mode(), tf.float32)), feat)

  @compile_
  def heads():
    return grads(ac.critic, lambda: tf.reduce_sum(
        tf.cast(ac.critic(imag_feat).mode(), tf.float32)), imag_feat)

  head_gflop = 3 * states * flops.mlp_flops(ac.critic) / 1e9
  size = 2048  # one square matmul of 2 * size^3 FLOPs; repeat it to the heads' FLOPs
  reps = max(1, round(head_gflop * 1e9 / (2 * size ** 3)))
  dtype = tf.bfloat16 if 'bfloat16' in agent.dtype else tf.float32
  a = tf.cast(tf.random.normal((size, size)), dtype)

  @compile_
  def gemm():
    x = a
    for _ in range(reps):
      x = tf.matmul(x, a)
    return tf.reduce_sum(tf.cast(x, tf.float32))

  return {
      'encoder': (encoder, 3 * n * flops.encoder_flops(wm.encoder) / 1e9),
      'decoder': (decoder, 3 * n * flops.decoder_flops(wm.heads['decoder']) / 1e9),
      'heads': (heads, head_gflop),
      'gemm': (gemm, reps * 2 * size ** 3 / 1e9),
  }


def policy_parts(tf, agent, xla: bool) -> dict:
  """{part: step function} of the batch-1 policy step (see the module docstring)."""
  from dreamerv2_tf.synthetic import make_batch
  import numpy as np
  wm, rssm = agent.wm, agent.wm.rssm
  batch = make_batch(agent.obs_space, {'action': agent.act_space}, batch=1, length=1)
  obs = {k: v[:, 0] for k, v in batch.items() if k != 'action'}
  _, state = agent.policy(obs, None, 'train')
  image = tf.constant(obs['image'].astype(np.float32) / 255 - 0.5)
  layers = [rssm.img_in, rssm.cell.layer, rssm.obs_out, rssm.obs_dist,
            *agent.ac.actor.hidden.denses, agent.ac.actor.head.out]
  # Under bf16, copies of the kernels in bfloat16: what acting would read from a bf16 cache.
  dtype = tf.bfloat16 if 'bfloat16' in agent.dtype else tf.float32
  kernels = [tf.Variable(tf.cast(layer.kernel, dtype), trainable=False) for layer in layers]
  vectors = [tf.cast(tf.random.normal((1, int(k.shape[0]))), dtype) for k in kernels]
  compile_ = lambda f: tf.function(f, jit_compile=xla, autograph=False)

  @compile_
  def encoder():
    return wm.encoder({'image': image})

  @compile_
  def matvecs():
    return tf.add_n([tf.reduce_sum(tf.cast(x @ k, tf.float32)) for x, k in zip(vectors, kernels)])

  return {'policy_step': lambda: agent.policy(obs, state, 'train'),
          'policy_encoder': encoder, 'policy_matvecs': matvecs,
          'policy_call': tf.function(lambda: tf.constant(0.0))}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=['atari'])
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--repeats', type=int, default=5, help='timed calls per part and variant')
  parser.add_argument('--image', default='64,64,1', help='image shape H,W,C')
  parser.add_argument('--out', default='', help='also write the JSON here')
  args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  for variant in args.variants.split(','):
    if variant not in VARIANTS:
      parser.error(f'variant {variant!r}: expected one of {", ".join(VARIANTS)}')
  if all('plain' in variant for variant in args.variants.split(',')):
    parser.error(f'--variants {args.variants}: needs one without +plain (the heads\' rate)')
  if args.repeats < 1:
    parser.error(f'--repeats {args.repeats}: must be at least 1')
  config = load_config(args.configs, rest)
  import tensorflow as tf
  from dreamerv2_tf import flops
  from dreamerv2_tf import precision
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.files import print_json
  from dreamerv2_tf.synthetic import make_spaces
  image = tuple(int(x) for x in args.image.split(','))
  spaces = make_spaces(image=image)
  rows, rates, part_gflop = [], {}, {}
  for variant in args.variants.split(','):
    prec, *mods = variant.split('+')
    xla, plain = 'xla' in mods, 'plain' in mods
    cfg = config.update({'precision': prec, 'decoder.fast_deconv': not plain,
                         'encoder.fast_conv': not plain})
    tf.keras.backend.clear_session()
    agent = Agent(cfg, *spaces)
    for part, (fn, gflop) in parts(tf, agent, cfg, xla).items():
      if plain and part in ('heads', 'gemm'):
        continue  # +plain only changes the convolutions
      seconds = timed(fn, args.repeats)
      rows.append({'variant': variant, 'part': part, 'seconds': round(seconds, 4),
                   'gflop': round(gflop, 4), 'gflops': round(gflop / seconds, 1)})
      rates[part] = max(rates.get(part, 0.0), gflop / seconds)
      part_gflop[part] = gflop
      print(rows[-1], file=sys.stderr, flush=True)
    for part, fn in policy_parts(tf, agent, xla).items():
      if xla and part == 'policy_step':
        continue  # the step's own XLA choice is `policy_xla`, measured by bench.py
      if plain and part != 'policy_encoder':
        continue
      rows.append({'variant': variant, 'part': part,
                   'seconds': round(timed(fn, 20 * args.repeats), 6)})
      print(rows[-1], file=sys.stderr, flush=True)
  step = flops.train_step_flops(agent, config.dataset.batch, config.dataset.length)
  # The step's FLOPs by part: the encoder's and the decoder's at their own best rates, the rest
  # (matmuls: the heads, the RSSM, the encoder's and decoder's dense layers) at the heads' rate,
  # the fastest matmul shape of the step.
  enc, dec = part_gflop['encoder'], part_gflop['decoder']
  rest_gflop = step['total'] / 1e9 - enc - dec
  ceiling = enc / rates['encoder'] + dec / rates['decoder'] + rest_gflop / rates['heads']
  conv = (enc + dec) * 1e9
  result = {
      'configs': args.configs, 'overrides': rest,
      'machine': precision.machine(),
      'rows': rows, 'best_gflops': {k: round(v, 1) for k, v in rates.items()},
      'step_gflop': round(step['total'] / 1e9, 4),
      'step_gflop_convolutions': round(conv / 1e9, 1),
      'ceiling_s': round(ceiling, 4),
  }
  print(f"step {result['step_gflop']} GFLOP ({result['step_gflop_convolutions']} in "
        f"convolutions); at the best rates measured ({result['best_gflops']}) no step is faster "
        f"than {result['ceiling_s']} s before casts and elementwise ops", file=sys.stderr)
  print_json(result, args.out)


if __name__ == '__main__':
  main_guard(main)
