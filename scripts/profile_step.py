"""Where the train step's time goes, op by op, from TensorFlow's profiler.

  python scripts/profile_step.py                       # atari preset, the default precision
  python scripts/profile_step.py --configs dmc_vision --precision 32 --steps 5 --out prof.json
  python scripts/profile_step.py --configs atari debug --steps 2   # quick smoke run

Builds the agent on a synthetic batch, runs warm-up steps, then profiles `--steps` train steps
and sums the duration of every TensorFlow op the executor ran (the `tf_Compute` threads of the
host trace) by op type and by category: convolutions and their gradients, matmuls, elementwise,
casts, reductions, data movement (transposes, concats, slices, copies), random, other. Op time
is summed over the executor's threads, which run ops side by side, so it can exceed the wall
time of a step; shares are of the op time. `_Mkl*` op types are oneDNN kernels, the rest
TensorFlow's own (Eigen). Prints a table to stderr and JSON to stdout; other arguments override
config keys (`--rssm.deter 200`). Re-run it on any machine: the shares differ by CPU.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dreamerv2_tf.config import load_config, main_guard  # noqa: E402

# First match wins; patterns are matched against the op type with any `_Mkl`/`Native`/`_`
# prefix removed (`_MklNativeFusedConv2D` -> `FusedConv2D`).
CATEGORIES = (
    ('convolution', r'Conv|Deconv'),
    ('matmul', r'MatMul|Einsum|Tensordot'),
    ('cast', r'^Cast$'),
    ('reduction', r'^(Sum|Mean|Max|Min|Prod|All|Any|ArgMax|ArgMin|L2Loss|BiasAddGrad)$'),
    ('random', r'Random|Stateless|Philox|Multinomial'),
    ('data movement', r'Transpose|Concat|Slice|Pack|Unpack|Split|Gather|Scatter|Pad|Tile|'
                      r'Reshape|Copy|Identity|Fill|ZerosLike|OnesLike|Select|Where|OneHot|'
                      r'Reverse|Squeeze|ExpandDims|BroadcastTo|Shape|Range'),
    ('optimizer', r'ApplyAdam|ResourceApply|AssignVariable|ReadVariable|AssignAdd|AssignSub'),
    ('elementwise', r'.'),
)


def category(op_type: str) -> str:
  base = re.sub(r'^_?(Mkl)?(Native)?', '', op_type)
  for name, pattern in CATEGORIES:
    if re.search(pattern, base):
      return name
  return 'elementwise'


def op_times(logdir: str) -> collections.Counter:
  """Seconds per op type, summed over the executor threads of the profile in `logdir`."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  totals = collections.Counter()
  for path in glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True):
    space = xplane_pb2.XSpace()
    with open(path, 'rb') as f:
      space.ParseFromString(f.read())
    for plane in space.planes:
      for line in plane.lines:
        if not line.name.startswith('tf_Compute'):
          continue
        for event in line.events:
          # Op events are named `op_name:OpType`; `ExecutorState::Process` encloses the ops
          # of one call, so it would count them twice.
          op = plane.event_metadata[event.metadata_id].name.split(':')[-1]
          if op != 'Process':
            totals[op] += event.duration_ps * 1e-12
  return totals


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=['atari'])
  parser.add_argument('--steps', type=int, default=3, help='profiled train steps')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--image', default='64,64,1', help='image shape H,W,C')
  parser.add_argument('--actions', type=int, default=6)
  parser.add_argument('--top', type=int, default=20, help='op types listed')
  parser.add_argument('--out', default='', help='also write the JSON here')
  args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  if args.steps < 1 or args.warmup < 1:
    parser.error(f'--steps {args.steps} and --warmup {args.warmup}: both must be at least 1')
  config = load_config(args.configs, rest)
  
  import tensorflow as tf
  from dreamerv2_tf import precision
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.files import print_json
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  image = tuple(int(x) for x in args.image.split(','))
  spaces = make_spaces(image=image, actions=args.actions)
  batch = make_batch(*spaces, batch=config.dataset.batch, length=config.dataset.length,
                     seed=config.seed)
  agent = Agent(config, *spaces)
  for _ in range(args.warmup):
    agent.train(batch)
  walls = []
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      for _ in range(args.steps):
        start = time.perf_counter()
        agent.train(batch)
        walls.append(time.perf_counter() - start)
    finally:
      tf.profiler.experimental.stop()
    totals = op_times(logdir)
  if not totals:
    sys.exit('error: the profile holds no op events (is the TensorFlow profiler available?)')
  total = sum(totals.values())
  by_category = collections.Counter()
  for op, seconds in totals.items():
    by_category[category(op)] += seconds
  per_step = lambda s: round(1e3 * s / args.steps, 2)
  result = {
      'configs': args.configs, 'overrides': rest, 'precision': agent.dtype,
      'machine': precision.machine(),
      'wall_ms_per_step_median': round(1e3 * statistics.median(walls), 1),
      'op_ms_per_step': per_step(total),
      'categories': [{'category': c, 'ms_per_step': per_step(s), 'share': round(s / total, 3)}
                     for c, s in by_category.most_common()],
      'ops': [{'op': op, 'category': category(op), 'ms_per_step': per_step(s),
               'share': round(s / total, 3)} for op, s in totals.most_common(args.top)],
  }
  print(f"{result['precision']}: wall {result['wall_ms_per_step_median']} ms per step, "
        f"op time {result['op_ms_per_step']} ms (summed over executor threads)", file=sys.stderr)
  for row in result['categories']:
    print(f"  {row['category']:>14}  {row['ms_per_step']:>9.1f} ms  {100 * row['share']:5.1f} %",
          file=sys.stderr)
  for row in result['ops']:
    print(f"  {row['op']:>40}  {row['category']:>14}  {row['ms_per_step']:>9.1f} ms  "
          f"{100 * row['share']:5.1f} %", file=sys.stderr)
  print_json(result, args.out)


if __name__ == '__main__':
  main_guard(main)
