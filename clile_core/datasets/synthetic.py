"""The built-in synthetic face set (clile_core.data.synthetic): generated from the config, no release to import."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clile_core.data.synthetic import ensure_dataset
from clile_core.data.synthetic.subjects import THRESHOLD, UNCODED_RATE
from clile_core.datasets import DatasetSpec, PublishedRows, register_dataset

if TYPE_CHECKING:  # a type only: the config module reads this registry for its allowed values
    from clile_core.config import DataConfig


def synthetic_dir(cfg: DataConfig) -> Path:
    """One folder per generation parameter set, so tests and demos of other sizes never collide."""
    name = f"{cfg.au_set}_{cfg.synthetic_subjects}x{cfg.synthetic_frames}_{cfg.synthetic_size}px_seed{cfg.synthetic_seed}"
    return Path(cfg.synthetic_root) / name


def make_data(cfg: DataConfig) -> tuple[Path, Path]:
    """(manifest, images root) of the set ``cfg`` describes, generated unless already there."""
    root = synthetic_dir(cfg)
    manifest = ensure_dataset(root, subjects=cfg.synthetic_subjects, frames_per_subject=cfg.synthetic_frames,
                              size=cfg.synthetic_size, au_set=cfg.au_set, seed=cfg.synthetic_seed)
    return Path(manifest), root / "images"


SPEC = register_dataset(DatasetSpec(
    name="synthetic",
    description="built-in cartoon faces with a subject identity shortcut, labelled with data.au_set's AUs",
    label_rule=f"1 when the frame's AU intensity reaches {THRESHOLD}, else 0; {UNCODED_RATE:.1%} of labels not coded (-1)",
    make_data=make_data,
    # The shapes of BP4D's published bars are informative when the set uses BP4D's AUs; the numbers are not.
    published=PublishedRows("bp4d_f1.csv", "BP4D", "Table 1", comparable=False),
))
