"""One fold of one variant, stage 0 -> (I) -> II, each stage writing into its own directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clile_core.config import RunConfig
from clile_core.data.fold_data import FoldData, load_fold_data
from clile_core.features import FeatureStore, load_or_compute
from clile_core.models.backbones import create_backbone, load_weights
from clile_core.training.common import StageResult
from clile_core.training.loop import EpochCallback, select_device
from clile_core.names import BACKBONE_FILE
from clile_core.training.stage0 import train_stage0
from clile_core.training.stage1 import train_stage1
from clile_core.training.stage2 import train_stage2
from clile_core.variants import Variant


def stage0_features(cfg: RunConfig, data: FoldData, stage0_dir: Path) -> FeatureStore:
    """Features of the frozen stage-0 backbone, from the cache when this checkpoint was seen before."""
    ckpt = Path(stage0_dir) / BACKBONE_FILE
    backbone = create_backbone(cfg.model.backbone, "none")
    load_weights(backbone, ckpt)
    return load_or_compute(backbone, ckpt, data, cfg, select_device(cfg.device))


@dataclass
class FoldRun:
    data: FoldData
    stages: dict[str, StageResult]
    features: FeatureStore | None

    @property
    def final(self) -> StageResult:
        return self.stages.get("stage2", self.stages["stage0"])


def run_fold(cfg: RunConfig, variant: Variant, fold: int, run_dir: Path, callback: EpochCallback | None = None) -> FoldRun:
    cfg = variant.apply(cfg)
    run_dir = Path(run_dir)
    data = load_fold_data(cfg.data, fold, cfg.features.cache_dir)
    stages = {"stage0": train_stage0(cfg, data, run_dir / "stage0", callback)}
    if not variant.stage2:
        return FoldRun(data, stages, None)
    features = stage0_features(cfg, data, run_dir / "stage0")
    stage1_dir = None
    if variant.stage1:
        stages["stage1"] = train_stage1(cfg, data, features, run_dir / "stage1", callback)
        stage1_dir = run_dir / "stage1"
    stages["stage2"] = train_stage2(
        cfg, data, features, run_dir / "stage2", run_dir / "stage0" / BACKBONE_FILE, stage1_dir, callback
    )
    return FoldRun(data, stages, features)
