"""Backbones (registry), feature encoders and the embedding heads of CL-ILE."""
