"""Cached image views: the centre view is evaluation's crop; random crops differ per image, repeat per row."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from clile_core.config import DataConfig
from clile_core.data.images import ViewTransform, eval_transform, normalize
from clile_core.hardware import images_to


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


def test_views_are_uint8_and_normalize_gives_torchvisions_float_input_exactly():
    """Loaders carry uint8 pixels (a quarter of float32's bytes) and ``normalize`` runs where the model does;
    the model must see exactly the values torchvision's ToDtype(scale=True) + Normalize gave per image."""
    cfg = DataConfig(input_size=48, resize_size=52)
    images = [_image(seed) for seed in range(3)]
    pixels = torch.stack([eval_transform(cfg)(image) for image in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 48, 48)
    assert ViewTransform(cfg, "crop0")(images[0], 0).dtype == torch.uint8
    reference = T.Compose([T.Resize((52, 52)), T.CenterCrop(48), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    expected = torch.stack([reference(image) for image in images])
    assert torch.equal(normalize(pixels), expected)
    assert torch.equal(images_to(pixels, torch.device("cpu")), expected)
    assert pixels.dtype == torch.uint8  # the batch itself is left as it was
