"""Sweeps of CL-ILE stage units over folds, variants, backbones and λ/τ, on Ray Tune, tracked in MLflow."""
