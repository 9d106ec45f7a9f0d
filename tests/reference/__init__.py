"""Numerical parity with the paper's own code (`dreamerv2==2.2.0`, installed with --no-deps).

Both sides run in their own process (ours on Keras 3, the paper's on tf_keras, which needs
`TF_USE_LEGACY_KERAS=1` before TensorFlow is imported):

  ours.py   builds our float32 agent for a case of `cases.py`, writes its weights, the batch and
            the config (`inputs.npz`, `case.json`), then every compared quantity (`ours.npz`).
  paper.py  builds the paper's agent from the same config, loads those weights into its layers
            (after one forward pass creates them), computes the same quantities (`paper.npz`).
  expl_ours.py, expl_paper.py  the same for an exploration case (Plan2Explore, model loss):
            the behaviour's quantities, against the paper's `expl.py`.
  compare.py  runs both and compares them name by name: the table of `scripts/parity.py` and
            the rows `tests/test_parity.py` asserts.

On both sides every latent and action sample is its distribution's mode, with the sample's
straight-through gradient (`modes.py`), so the two are deterministic and comparable.
"""
