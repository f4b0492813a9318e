"""Cached image views: the centre view is evaluation's crop; random crops differ per image, repeat per row."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from clile_core.config import DataConfig
from clile_core.data.images import ViewTransform, eval_transform


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, size=(72, 72, 3), dtype=np.uint8))


def test_centre_view_is_the_evaluation_crop_and_flip_its_mirror():
    cfg = DataConfig(input_size=64, resize_size=71)  # odd slack: the crop's rounding must match
    image = _image(0)
    centre = ViewTransform(cfg, "centre")(image, 3)
    assert torch.equal(centre, eval_transform(cfg)(image))
    assert torch.equal(ViewTransform(cfg, "flip")(image, 3), centre.flip(-1))


def test_random_crop_offsets_are_drawn_per_image_and_reproducible():
    cfg = DataConfig(input_size=48, resize_size=72)
    image = _image(1)
    crop = ViewTransform(cfg, "crop0")
    per_row = [crop(image, row) for row in range(8)]
    assert torch.equal(per_row[5], ViewTransform(cfg, "crop0")(image, 5))  # same (view, row): same pixels
    distinct = {tuple(t.flatten()[:50].tolist()) for t in per_row}
    assert len(distinct) >= 6  # the same picture at 8 rows: (nearly) every row gets its own crop
    assert not torch.equal(crop(image, 0), ViewTransform(cfg, "crop1")(image, 0))  # and every view its own
