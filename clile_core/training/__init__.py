"""Stages 0, I and II of CL-ILE, sharing one epoch loop with best-epoch selection on validation F1."""
