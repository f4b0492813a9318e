"""The stage registry: every training stage is one object with the same ``run`` signature.

A stage declares what it needs upstream, which config sections its output (and so its unit key) depends
on, which variant switch turns it on, how it is scheduled and what it provides downstream: its artifact
files and, for stage 0, the feature cache. ``clile_core.pipeline``, the orchestrator's units, trials,
search and resources use only this interface, so adding a stage is a trainer module, a class registered
here with ``@register_stage`` and its config section (README "What to edit").
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from clile_core.config import RunConfig
from clile_core.data.digests import file_hash
from clile_core.data.fold_data import FoldData
from clile_core.features import FeatureStore, cache_key, load_or_compute
from clile_core.models.backbones import create_backbone, load_weights
from clile_core.names import BACKBONE_FILE, MODEL_JSON, STAGE1_FILE
from clile_core.training.common import StageResult
from clile_core.training.loop import EpochCallback, select_device
from clile_core.training.stage0 import train_stage0
from clile_core.training.stage1 import train_stage1
from clile_core.training.stage2 import train_stage2
from clile_core.variants import Variant


class Stage:
    """One training stage. Subclasses set the class attributes and implement ``run``."""

    name: str  # directory, unit-key prefix and MLflow ``stage`` tag
    label: str  # how tables and run names say it
    needs: tuple[str, ...] = ()  # upstream stages it always reads (they run first)
    optional: tuple[str, ...] = ()  # upstream stages it reads when the variant trains them
    key_sections: tuple[str, ...] = ()  # config key prefixes its output depends on (part of its unit key)
    switch: str | None = None  # the Variant flag that turns it on; None: every variant trains it
    on_images: bool = False  # trains on images: a whole GPU per trial, cost grows with the backbone
    answers: bool = False  # predicts AUs with a saved model: its result can be a table cell
    provides: tuple[str, ...] = ()  # files it writes for downstream stages and for serving

    @property
    def section(self) -> str:
        """The config section with its training settings (epochs, rate, batch size); a stage whose section
        is named otherwise overrides this."""
        return self.name

    def enabled(self, variant: Variant) -> bool:
        return self.switch is None or bool(getattr(variant, self.switch))

    def upstream_in(self, available: Iterable[str]) -> list[str]:
        """Its upstream stages among ``available`` (those already trained for this fold)."""
        available = set(available)
        return [name for name in (*self.needs, *self.optional) if name in available]

    def run(self, cfg: RunConfig, data: FoldData, upstream: dict[str, Path], out_dir: Path,
            callback: EpochCallback | None) -> StageResult:
        """Train on ``data`` reading the upstream stages' output directories, write into ``out_dir``."""
        raise NotImplementedError

    def cache_keys(self, cfg: RunConfig, data: FoldData, out_dir: Path) -> list[str]:
        """The feature-cache entries the trained output in ``out_dir`` provides downstream (none by default)."""
        return []

    def build_caches(self, cfg: RunConfig, data: FoldData, out_dir: Path) -> list[str]:
        """Compute (or find) those entries now; their keys."""
        return []


STAGES: dict[str, Stage] = {}  # name -> stage, in registration order: upstream before downstream


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: add one instance of ``cls`` to ``STAGES``. Its upstream stages must be registered
    already, which keeps ``STAGES`` in an order where every stage comes after what it reads."""
    stage = cls()
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is registered twice ({type(STAGES[stage.name]).__name__}, {cls.__name__})")
    unknown = [name for name in (*stage.needs, *stage.optional) if name not in STAGES]
    if unknown:
        raise ValueError(f"stage {stage.name!r} reads {unknown}, which are not registered; register it after them "
                         f"(registered: {list(STAGES)})")
    STAGES[stage.name] = stage
    return cls


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; registered stages: {list(STAGES)}")
    return STAGES[name]


def run_stage(stage: Stage, *, cfg: RunConfig, data: FoldData, upstream: dict[str, Path], out_dir: Path,
              callback: EpochCallback | None) -> StageResult:
    """``stage.run``, holding it to its ``provides``: downstream stages and serving read those files, so a
    stage that finished without one fails here, naming it, instead of in whatever reads it later."""
    result = stage.run(cfg, data, upstream, out_dir, callback)
    missing = [name for name in stage.provides if not (Path(out_dir) / name).exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name} finished without writing {missing}, which it declares in `provides`; "
                           "write them in its run() or drop them from `provides`")
    return result


def stage_order(name: str) -> int:
    """Position in ``STAGES``: sorting by it puts upstream units before downstream ones."""
    return list(STAGES).index(name)


def fold_stages(variant: Variant) -> list[Stage]:
    """The stages ``variant`` trains for one fold, upstream first; refuses one whose required upstream is off."""
    chosen = [stage for stage in STAGES.values() if stage.enabled(variant)]
    names = {stage.name for stage in chosen}
    for stage in chosen:
        missing = [name for name in stage.needs if name not in names]
        if missing:
            raise ValueError(f"variant {variant.name}: stage {stage.name} needs {missing}, which the variant does not train")
    return chosen


def final_stage(variant: Variant) -> Stage:
    """The stage whose result answers the variant's table cell: the last one it trains that predicts AUs."""
    return [stage for stage in fold_stages(variant) if stage.answers][-1]


def stage0_features(cfg: RunConfig, data: FoldData, stage0_dir: Path) -> FeatureStore:
    """Features of the frozen stage-0 backbone, from the cache when this checkpoint was seen before."""
    ckpt = Path(stage0_dir) / BACKBONE_FILE
    backbone = create_backbone(cfg.model.backbone, "none")
    load_weights(backbone, ckpt)
    return load_or_compute(backbone, ckpt, data=data, cfg=cfg, device=select_device(cfg.device))


@register_stage
class Stage0(Stage):
    name, label = "stage0", "stage 0"
    key_sections = ("data.", "model.backbone", "model.weights", "stage0.")
    on_images, answers = True, True
    provides = (BACKBONE_FILE, MODEL_JSON)

    def run(self, cfg, data, upstream, out_dir, callback):
        return train_stage0(cfg, data, out_dir, callback)

    def cache_keys(self, cfg, data, out_dir):
        return [cache_key(file_hash(Path(out_dir) / BACKBONE_FILE), data.manifest_hash, cfg)]

    def build_caches(self, cfg, data, out_dir):
        # Built with the stage-0 unit, so the stage I/II units of a fold, which may run concurrently, all
        # find the features cached instead of racing to compute them.
        return [stage0_features(cfg, data, out_dir).key]


@register_stage
class Stage1(Stage):
    name, label = "stage1", "stage I"
    needs = ("stage0",)
    key_sections = ("model.", "stage1.")
    switch = "stage1"
    provides = (STAGE1_FILE,)

    def run(self, cfg, data, upstream, out_dir, callback):
        features = stage0_features(cfg, data, upstream["stage0"])
        return train_stage1(cfg, data, features, out_dir, callback=callback)


@register_stage
class Stage2(Stage):
    name, label = "stage2", "stage II"
    needs, optional = ("stage0",), ("stage1",)
    key_sections = ("model.", "stage2.")
    switch = "stage2"
    answers = True
    provides = (MODEL_JSON,)

    def run(self, cfg, data, upstream, out_dir, callback):
        features = stage0_features(cfg, data, upstream["stage0"])
        return train_stage2(cfg, data, features, out_dir, backbone_ckpt=Path(upstream["stage0"]) / BACKBONE_FILE,
                            stage1_dir=upstream.get("stage1"), callback=callback)
