"""The actor's gradient through sampled imagination against the paper's code.

tests/reference/sampled.py on the debug preset's small networks: same weights and start states,
fresh samples per draw. The mode-based parity (test_parity.py) cannot see a gradient that flows
through a sample; this does (docs/parity.md, "Under sampling").
"""
import json
import math
import statistics

import pytest

from tests.reference import sampled

pytestmark = pytest.mark.timeout(900)
DRAWS = 12


@pytest.fixture(scope='module')
def draws(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('sampled')
  sampled.main([str(workdir), '--draws', str(DRAWS), '--configs', 'dmc_vision', 'debug'])
  rows = {row: [json.loads(line) for line in (workdir / f'{row}.jsonl').read_text().splitlines()]
          for row in ('ours', 'ours_exact', 'paper')}
  return {key: {row: [d[key] for d in values] for row, values in rows.items()}
          for key in ('actor_grad_norm', 'latent_repeat')}


def _gap(a, b):
  """Difference of the means in standard errors."""
  se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
  return abs(statistics.mean(a) - statistics.mean(b)) / se


def test_actor_gradient_through_samples_matches_the_paper_code(draws):
  norms = draws['actor_grad_norm']
  assert len(norms['paper']) == DRAWS
  assert _gap(norms['ours'], norms['paper']) < 4, norms


def test_the_exact_gradient_is_told_apart_from_the_papers(draws):
  # The comparison has the power to see a difference of gradient, not only of samples.
  norms = draws['actor_grad_norm']
  assert _gap(norms['ours_exact'], norms['paper']) > 10, norms


def test_imagined_latents_are_drawn_afresh_at_every_step_on_both_sides(draws):
  # With a global TensorFlow seed in its process, the paper's nested tf.function img_step
  # redrew the same latent sample at every imagined step: 90 % repeats instead of sum(p^2).
  repeat = {row: statistics.mean(values) for row, values in draws['latent_repeat'].items()}
  assert abs(repeat['paper'] - repeat['ours']) < 0.05, repeat
  assert repeat['ours'] < 0.5, repeat


def test_pretrain_bad_override_is_one_line_before_any_side_runs(tmp_path):
  # tests/reference/pretrain.py: overrides after `--` go to both sides; a bad one stops it at
  # once with the key named (each side would otherwise load TensorFlow first, then fail).
  import subprocess
  import sys
  episodes = tmp_path / 'episodes'
  episodes.mkdir()
  (episodes / 'ep.npz').write_bytes(b'')  # Only its name is looked at before the check.
  proc = subprocess.run(
      [sys.executable, '-m', 'tests.reference.pretrain', str(episodes), str(tmp_path / 'out'),
       '--', '--model_opt.lr', 'fast'], capture_output=True, text=True, timeout=120,
      cwd=sampled.ROOT)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].endswith(
      "config key 'model_opt.lr' expects float, got 'fast' (str)"), proc.stderr
  assert not (tmp_path / 'out').exists()
