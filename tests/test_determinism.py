"""`--seed` chooses the initial weights, and `deterministic: true` makes a run repeatable: the
same seed gives the same episodes, losses and weights, step for step. Each run is a process of
its own (op determinism is process-wide, and a seed must not lean on an earlier run's)."""
import numpy as np

from tests.test_train_cli import ENV, episodes, records, run

ARGS = ['--configs', 'debug', '--task', 'gym:CartPole-v1', '--steps', '450', '--prefill', '200',
        '--log_every', '100', '--eval_every', '0', '--precision', '32']
# TensorFlow's own thread pools, as a user's run has them (conftest gives each test worker one
# thread): with one thread an order-dependent reduction would repeat by chance.
THREADED = {k: v for k, v in ENV.items()
            if k not in ('TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS')}
# Timings differ from run to run by nature; everything else must not.
TIMING = ('fps', 'time', '_ms', '_s', 'duration', 'seconds', 'share')


def learned(logdir):
  """(metrics without timings, the actions of every training episode)."""
  rows = [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in records(logdir)]
  actions = [np.load(path)['action'] for path in episodes(logdir)]
  return rows, actions


def test_the_same_seed_repeats_a_deterministic_run_and_another_seed_does_not(tmp_path):
  runs = {}
  for name, seed in (('a', '0'), ('b', '0'), ('other', '1')):
    run([*ARGS, '--deterministic', 'true', '--seed', seed, '--logdir', str(tmp_path / name)],
        env=THREADED)
    runs[name] = learned(tmp_path / name)
  (rows_a, acts_a), (rows_b, acts_b), (rows_o, _) = runs['a'], runs['b'], runs['other']
  assert any('model_loss' in r for r in rows_a)  # Updates ran and were logged.
  # No evaluations (eval_every 0), so no random-policy eval episode either.
  assert not any('eval_random_return' in r or 'eval_return' in r for r in rows_a)
  assert rows_a == rows_b
  assert len(acts_a) == len(acts_b) and all(np.array_equal(x, y) for x, y in zip(acts_a, acts_b))
  # The comparison has teeth: another seed gives another run.
  assert rows_o != rows_a


def test_deterministic_needs_the_default_strategy(tmp_path):
  proc = run([*ARGS, '--deterministic', 'true', '--strategy', 'mirrored',
              '--logdir', str(tmp_path / 'x')], check=False)
  assert proc.returncode != 0
  assert "deterministic: true runs with strategy default only, not 'mirrored'" in proc.stderr
  assert not (tmp_path / 'x').exists()
