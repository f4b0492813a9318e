"""Image pipeline (paper §4.1, scaled by input size): resize, random crop + flip for training,
centre crop for evaluation; and the fixed views whose backbone features are cached."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from clile_core.config import DataConfig

_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet statistics, as the backbones were trained


# The transforms end in uint8 (3, H, W) pixels, and ``normalize`` turns a batch of them into the model's float
# input where the model runs: a DataLoader then moves a quarter of the bytes through its workers' shared
# memory, the pinned copy and the bus (on an H100 the float32 batches capped ResNet-18 at half its speed).
def train_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([T.Resize((cfg.resize, cfg.resize)), T.RandomCrop(cfg.input_size), T.RandomHorizontalFlip(), T.ToImage()])


def eval_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([T.Resize((cfg.resize, cfg.resize)), T.CenterCrop(cfg.input_size), T.ToImage()])


@functools.cache
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: building them from lists at every batch would copy to the GPU and wait for it
    return torch.tensor(_MEAN).view(-1, 1, 1).to(device), torch.tensor(_STD).view(-1, 1, 1).to(device)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> the backbones' input: scaled to [0, 1], then ImageNet-standardised, in
    torchvision's ToDtype(scale=True) + Normalize order, so the values are exactly theirs."""
    mean, std = _statistics(pixels.device)
    return pixels.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def view_names(random_crops: int) -> list[str]:
    return ["centre", "flip"] + [f"crop{k}" for k in range(random_crops)]


class ViewTransform:
    """A deterministic view of a frame (uint8 pixels): the centre crop, its mirror, or the k-th random crop ('crop<k>').

    A random crop's offsets and flip are drawn per image, seeded by (k, manifest row): every image gets
    its own crops, as random 224 crops in training would give, yet the cached tokens are reproducible.
    """

    def __init__(self, cfg: DataConfig, view: str):
        if view not in ("centre", "flip") and not (view.startswith("crop") and view[4:].isdigit()):
            raise ValueError(f"unknown view {view!r}; views are 'centre', 'flip' and 'crop<k>'")
        self.view, self.size = view, cfg.input_size
        self.slack = cfg.resize - cfg.input_size
        self.resize = T.Resize((cfg.resize, cfg.resize))

    def __call__(self, image: Image.Image, row: int) -> torch.Tensor:
        image = self.resize(image)
        if self.view in ("centre", "flip"):
            image = T.functional.center_crop(image, [self.size, self.size])  # exactly eval_transform's crop
            flip = self.view == "flip"
        else:
            rng = np.random.default_rng([int(self.view[4:]), row])
            top, left = (int(v) for v in rng.integers(0, self.slack + 1, size=2))
            image = T.functional.crop(image, top, left, self.size, self.size)
            flip = bool(rng.random() < 0.5)
        return T.functional.to_image(T.functional.horizontal_flip(image) if flip else image)


class FrameDataset(Dataset):
    """Frames of a manifest (selected rows) as (image tensor, labels, row index)."""

    def __init__(self, manifest: pd.DataFrame, images_root: str | Path, rows: np.ndarray, *, labels: np.ndarray,
                 transform: Callable[[Image.Image], torch.Tensor] | ViewTransform):
        self.paths = [Path(images_root) / p for p in manifest["image"].to_numpy()[rows]]
        self.labels = torch.as_tensor(labels[rows], dtype=torch.float32)
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        image = read_image(self.paths[i], "listed in the manifest")
        pixels = self.transform(image, int(row)) if isinstance(self.transform, ViewTransform) else self.transform(image)
        return pixels, self.labels[i], row


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
