"""Datasets: manifests, importers for BP4D and DISFA, folds, the synthetic face set, image pipeline."""
