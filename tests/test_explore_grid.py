"""Plan2Explore explores: on a reward-free grid seen as images it visits clearly more cells than
the greedy actor in the same number of steps (docs/exploration.md has the measurements and why
the grid is drawn as an image: with vector observations neither behaviour is ahead)."""
import json
import subprocess
import sys

import pytest

from tests.test_bench import ENV, ROOT

# A paper-sized ensemble (10 members, horizon 15) on the debug preset's tiny world model; the
# deterministic loop makes each run repeat exactly on one machine.
OVERRIDES = ['--deterministic', 'true', '--disag_models', '10', '--imag_horizon', '15',
             '--expl_head.units', '128', '--expl_head.layers', '3']


@pytest.mark.slow
def test_plan2explore_visits_more_cells_than_the_greedy_actor(tmp_path):
  out = tmp_path / 'grid.json'
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'explore_grid.py'), '--grid', '21x21',
       '--length', '40', '--obs', 'image', '--seeds', '1', '--steps', '3000',
       '--out', str(out), '--', *OVERRIDES],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stderr[-3000:]
  visited = json.loads(out.read_text())['visited']
  (p2e,), (greedy,) = visited['plan2explore'], visited['greedy']
  # Measured in this deterministic mode (2-core AMD EPYC, 2026-12-07, the fused Adam step):
  # seed 1 Plan2Explore 283, greedy 175 of 441 cells (1.62x); seed 0, left out to keep the suite
  # short, 327 against 254 (1.29x). With Keras' Adam (2026-12-03): seeds 0-2 324, 281, 308
  # against 227, 151, 229; without the deterministic mode three other runs 317, 289, 328
  # against 262, 185, 264 (1.31x). A uniformly random walk visits 271-298.
  assert p2e >= 1.15 * greedy, visited
