"""Per-epoch time of stage II with the feature cache vs recomputing the frozen backbone every batch.

Both runs use the same trainer (clile_core.training.stage2.train_stage2); the uncached run gets a
drop-in for the FeatureStore that runs the backbone on the images of each batch, which is what a
pipeline without the cache does. Prints the ratio last.

    python bench/feature_cache.py [--dataset synthetic] [--epochs 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from clile_core.config import load_run_config
from clile_core.data.fold_data import FoldData, load_fold_data
from clile_core.data.images import ViewTransform, normalize
from clile_core.features import FeatureStore
from clile_core.models.backbones import create_backbone, load_weights
from clile_core.names import BACKBONE_FILE
from clile_core.stages import stage0_features
from clile_core.training.stage0 import train_stage0
from clile_core.training.stage2 import train_stage2
from clile_core.variants import get_variant


class LiveFeatures(FeatureStore):
    """Same interface as the cache, but every request decodes the images and runs the backbone."""

    def __init__(self, backbone: torch.nn.Module, data: FoldData, cfg, views: list[str], shape: tuple[int, int]):
        super().__init__("live", Path("."), {}, hit=False)
        self.backbone, self.data, self._shape = backbone.eval(), data, shape
        self.transforms = {name: ViewTransform(cfg.data, name) for name in views}

    @property
    def token_dim(self) -> int:
        return self._shape[1]

    @property
    def token_count(self) -> int:
        return self._shape[0]

    @torch.no_grad()
    def _tokens(self, rows: torch.Tensor, views: list[str]) -> torch.Tensor:
        images = []
        for row, view in zip(rows.tolist(), views):
            with Image.open(self.data.images_root / self.data.manifest["image"].iloc[row]) as img:
                images.append(self.transforms[view](img.convert("RGB"), row))
        return self.backbone(normalize(torch.stack(images))).float()

    def gather(self, rows, view: str = "centre") -> torch.Tensor:
        rows = torch.as_tensor(rows, dtype=torch.long)
        return self._tokens(rows, [view] * len(rows))

    def gather_mixed(self, rows: torch.Tensor, view_ids: torch.Tensor, names: list[str]) -> torch.Tensor:
        return self._tokens(rows, [names[i] for i in view_ids.tolist()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--epochs", type=int, default=2, help="stage II epochs timed per mode")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = ["stage0.epochs=1", f"stage2.epochs={args.epochs}", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_run_config(args.dataset, None, [*overrides, f"features.cache_dir={tmp}/features"])
        cfg = get_variant("A1").apply(cfg)  # stage II without stage I: the timing isolates the feature path
        data = load_fold_data(cfg.data, 1, cfg.features.cache_dir)
        print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
              f"{len(data.split.train)} training frames, input {cfg.data.input_size}px, {cfg.model.backbone}")
        train_stage0(cfg, data, Path(tmp) / "stage0")
        ckpt = Path(tmp) / "stage0" / BACKBONE_FILE
        start = time.time()
        cached = stage0_features(cfg, data, Path(tmp) / "stage0")
        print(f"one-off feature extraction: {time.time() - start:.1f}s")
        backbone = create_backbone(cfg.model.backbone, "none")
        load_weights(backbone, ckpt)
        live = LiveFeatures(backbone, data, cfg, list(cached.views), (cached.token_count, cached.token_dim))
        epoch_seconds = {}
        for label, features in (("cached", cached), ("uncached", live)):
            result = train_stage2(cfg, data, features, Path(tmp) / f"stage2-{label}", backbone_ckpt=ckpt)
            epoch_seconds[label] = statistics.median(row["epoch_seconds"] for row in result.history)
            print(f"stage II per epoch, {label:8s}: {epoch_seconds[label]:.2f}s (median of {len(result.history)})")
        print(f"ratio uncached / cached: {epoch_seconds['uncached'] / epoch_seconds['cached']:.1f}x")


if __name__ == "__main__":
    main()
