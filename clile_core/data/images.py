"""Image pipeline (paper §4.1, scaled by input size): resize, random crop + flip for training,
centre crop for evaluation; and the fixed views whose backbone features are cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from clile_core.config import DataConfig

_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet statistics, as the backbones were trained


def _to_tensor() -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(_MEAN, _STD)]


def train_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([T.Resize((cfg.resize, cfg.resize)), T.RandomCrop(cfg.input_size), T.RandomHorizontalFlip(), *_to_tensor()])


def eval_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([T.Resize((cfg.resize, cfg.resize)), T.CenterCrop(cfg.input_size), *_to_tensor()])


def view_names(random_crops: int) -> list[str]:
    return ["centre", "flip"] + [f"crop{k}" for k in range(random_crops)]


def view_transform(cfg: DataConfig, view: str) -> T.Compose:
    """A deterministic view: the centre crop, its mirror, or the k-th fixed random crop (seeded by k)."""
    resize = T.Resize((cfg.resize, cfg.resize))
    if view == "centre":
        return eval_transform(cfg)
    if view == "flip":
        return T.Compose([resize, T.CenterCrop(cfg.input_size), T.RandomHorizontalFlip(p=1.0), *_to_tensor()])
    if view.startswith("crop") and view[4:].isdigit():
        rng = np.random.default_rng(int(view[4:]))
        slack = cfg.resize - cfg.input_size
        top, left = (int(v) for v in rng.integers(0, slack + 1, size=2))
        flip = [T.RandomHorizontalFlip(p=1.0)] if rng.random() < 0.5 else []
        crop = T.Lambda(lambda img: T.functional.crop(img, top, left, cfg.input_size, cfg.input_size))
        return T.Compose([resize, crop, *flip, *_to_tensor()])
    raise ValueError(f"unknown view {view!r}; views are 'centre', 'flip' and 'crop<k>'")


class FrameDataset(Dataset):
    """Frames of a manifest (selected rows) as (image tensor, labels, row index)."""

    def __init__(self, manifest: pd.DataFrame, images_root: str | Path, rows: np.ndarray, labels: np.ndarray, transform):
        self.paths = [Path(images_root) / p for p in manifest["image"].to_numpy()[rows]]
        self.labels = torch.as_tensor(labels[rows], dtype=torch.float32)
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.transform(read_image(self.paths[i], "listed in the manifest")), self.labels[i], self.rows[i]


def read_image(path: str | Path, origin: str = "") -> Image.Image:
    """An RGB image, or one message naming the file: missing, a directory, not an image, or truncated."""
    path = Path(path)
    where = f"image {path}{' ' + origin if origin else ''}"
    if not path.exists():
        raise FileNotFoundError(f"{where} does not exist")
    if not path.is_file():
        raise ValueError(f"{where} is not a file; pass image files")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:  # OSError: PIL's "image file is truncated"
        raise ValueError(f"{where} cannot be read as an image ({exc}); replace or remove it") from exc
