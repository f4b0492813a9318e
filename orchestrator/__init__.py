"""Sweeps of CL-ILE stage units over folds, variants, backbones and λ/τ, on Ray Tune, tracked in MLflow."""

import os

# Ray Tune's new console output ignores verbose=0 and prints a status box per level; the driver
# prints its own progress lines instead.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
