"""Reference scores for normalizing Atari returns, as used in the DreamerV2 paper.

`REFERENCE[task] = (random, human_gamer, human_record)` for the paper's 55 Atari games, taken
from the published `baselines.json` next to the paper's score files. Two normalizations:

  gamer_normalized(task, score)  = (score - random) / (human_gamer - random)
  record_normalized(task, score) = min(1, (score - random) / (human_record - random))

The second is the paper's "clipped record" score: normalized by the human world record and
clipped at 1 so that no game can count for more than reaching the record. It is clipped from
above only (like the paper's own plotting code), so a score below random stays negative.
Tasks outside this table (non-Atari runs, games the paper left out) normalize to None.
"""
from __future__ import annotations

import math

__all__ = ['REFERENCE', 'gamer_normalized', 'record_normalized']

# task: (random, human_gamer, human_record)
REFERENCE: dict[str, tuple[float, float, float]] = {
  'atari_alien':             (228.8, 7127.7, 251916.0),
  'atari_amidar':            (5.8, 1719.5, 104159.0),
  'atari_assault':           (222.4, 742.0, 8647.0),
  'atari_asterix':           (210.0, 8503.3, 1000000.0),
  'atari_asteroids':         (719.1, 47388.7, 10506650.0),
  'atari_atlantis':          (12850.0, 29028.1, 10604840.0),
  'atari_bank_heist':        (14.2, 753.1, 82058.0),
  'atari_battle_zone':       (2360.0, 37187.5, 801000.0),
  'atari_beam_rider':        (363.9, 16926.5, 999999.0),
  'atari_berzerk':           (123.7, 2630.4, 1057940.0),
  'atari_bowling':           (23.1, 160.7, 300.0),
  'atari_boxing':            (0.1, 12.1, 100.0),
  'atari_breakout':          (1.7, 30.5, 864.0),
  'atari_centipede':         (2090.9, 12017.0, 1301709.0),
  'atari_chopper_command':   (811.0, 7387.8, 999999.0),
  'atari_crazy_climber':     (10780.5, 35829.4, 219900.0),
  'atari_demon_attack':      (152.1, 1971.0, 1556345.0),
  'atari_double_dunk':       (-18.6, -16.4, 22.0),
  'atari_enduro':            (0.0, 860.5, 9500.0),
  'atari_fishing_derby':     (-91.7, -38.7, 71.0),
  'atari_freeway':           (0.0, 29.6, 38.0),
  'atari_frostbite':         (65.2, 4334.7, 454830.0),
  'atari_gopher':            (257.6, 2412.5, 355040.0),
  'atari_gravitar':          (173.0, 3351.4, 162850.0),
  'atari_hero':              (1027.0, 30826.4, 1000000.0),
  'atari_ice_hockey':        (-11.2, 0.9, 36.0),
  'atari_james_bond':        (7.0, 29.0, 45550.0),
  'atari_kangaroo':          (52.0, 3035.0, 1424600.0),
  'atari_krull':             (1598.0, 2665.5, 104100.0),
  'atari_kung_fu_master':    (258.5, 22736.3, 1000000.0),
  'atari_montezuma_revenge': (0.0, 4753.3, 1219200.0),
  'atari_ms_pacman':         (307.3, 6951.6, 290090.0),
  'atari_name_this_game':    (2292.3, 8049.0, 25220.0),
  'atari_phoenix':           (761.4, 7242.6, 4014440.0),
  'atari_pitfall':           (-229.4, 6463.7, 114000.0),
  'atari_pong':              (-20.7, 14.6, 21.0),
  'atari_private_eye':       (24.9, 69571.3, 101800.0),
  'atari_qbert':             (163.9, 13455.0, 2400000.0),
  'atari_riverraid':         (1338.5, 17118.0, 1000000.0),
  'atari_road_runner':       (11.5, 7845.0, 2038100.0),
  'atari_robotank':          (2.2, 11.9, 76.0),
  'atari_seaquest':          (68.4, 42054.7, 999999.0),
  'atari_skiing':            (-17098.1, -4336.9, -3272.0),
  'atari_solaris':           (1236.3, 12326.7, 111420.0),
  'atari_space_invaders':    (148.0, 1668.7, 621535.0),
  'atari_star_gunner':       (664.0, 10250.0, 77400.0),
  'atari_tennis':            (-23.8, -8.3, 21.0),
  'atari_time_pilot':        (3568.0, 5229.2, 65300.0),
  'atari_tutankham':         (11.4, 167.6, 5384.0),
  'atari_up_n_down':         (533.4, 11693.2, 82840.0),
  'atari_venture':           (0.0, 1187.5, 38900.0),
  'atari_video_pinball':     (16256.9, 17667.9, 89218328.0),
  'atari_wizard_of_wor':     (563.5, 4756.5, 395300.0),
  'atari_yars_revenge':      (3092.9, 54576.9, 15000105.0),
  'atari_zaxxon':            (32.5, 9173.3, 83700.0),
}


def _normalize(task: str, score: float, index: int) -> float | None:
  ref = REFERENCE.get(task)
  if ref is None or score is None or not math.isfinite(score):
    return None
  low, high = ref[0], ref[index]
  return (float(score) - low) / (high - low)


def gamer_normalized(task: str, score: float) -> float | None:
  """Human-gamer-normalized score: 0 is a random agent, 1 the professional gamer.

  Returns None for a task without reference scores (or a missing / non-finite score).
  """
  return _normalize(task, score, 1)


def record_normalized(task: str, score: float, clip: bool = True) -> float | None:
  """Record-normalized score: 0 is a random agent, 1 the human world record.

  With `clip` (the paper's "clipped record" score) values above 1 become 1. None for a task
  without reference scores.
  """
  value = _normalize(task, score, 2)
  if value is not None and clip:
    value = min(value, 1.0)
  return value
