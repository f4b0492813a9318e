"""One fold of one variant: the stages it trains (``clile_core.stages``), upstream first, each writing into
its own directory ``run_dir/<stage>``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clile_core.config import RunConfig
from clile_core.data.fold_data import FoldData, load_fold_data
from clile_core.stages import fold_stages, get_stage, run_stage
from clile_core.training.common import StageResult
from clile_core.training.loop import EpochCallback
from clile_core.variants import Variant


@dataclass
class FoldRun:
    data: FoldData
    stages: dict[str, StageResult]

    @property
    def final(self) -> StageResult:
        """The result of the last stage that predicts AUs (stage II, or stage 0 for A0)."""
        return [result for name, result in self.stages.items() if get_stage(name).answers][-1]


def run_fold(cfg: RunConfig, variant: Variant, fold: int, run_dir: Path, *,
             callback: EpochCallback | None = None) -> FoldRun:
    cfg = variant.apply(cfg)
    run_dir = Path(run_dir)
    data = load_fold_data(cfg.data, fold, cfg.features.cache_dir)
    results: dict[str, StageResult] = {}
    for stage in fold_stages(variant):
        upstream = {name: run_dir / name for name in stage.upstream_in(results)}
        results[stage.name] = run_stage(stage, cfg=cfg, data=data, upstream=upstream, out_dir=run_dir / stage.name,
                                        callback=callback)
    return FoldRun(data, results)
