"""Data plumbing shared by every dataset: manifests, label-file reading, folds, the synthetic face set, image
pipeline. What is specific to one dataset (AUs, fold lists, importer) lives in ``clile_core.datasets``."""
