"""CL-ILE: supervised contrastive learning with identity-label embeddings for AU recognition."""

__version__ = "0.1.0"
