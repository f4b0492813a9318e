"""Running one unit: the Ray Tune trainable (also callable in-process), writing into the artifact store."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
from typing import Any, Callable

import torch

from clile_core.atomic import write_text
from clile_core.data.fold_data import load_fold_data
from clile_core.names import MODEL_JSON, TRAIN_SECONDS, UNIT_RECORD
from clile_core.stages import get_stage, run_stage
from orchestrator.store import ArtifactStore
from orchestrator.units import Unit

Report = Callable[[dict[str, Any]], None]
REUSED = "reused"  # final report key: the unit was completed by another sweep while this trial waited
FAIL_ENV = "CLILE_FAIL_UNITS"  # unit-key prefixes or table rows (e.g. A1) whose unit fails on purpose (fault-injection tests)


def _inject_failure(unit: Unit) -> None:
    for prefix in filter(None, os.environ.get(FAIL_ENV, "").split(",")):
        if unit.key.startswith(prefix) or prefix in unit.final_for:
            raise RuntimeError(f"injected failure for unit {unit.key} ({FAIL_ENV}={os.environ[FAIL_ENV]})")


def run_unit(store: ArtifactStore, unit: Unit, report: Report) -> dict[str, Any]:
    """Train ``unit`` (its upstream units must be complete) and return its ``unit.json`` record.

    ``report`` receives each epoch's metrics (and the final ones) as they come; a unit that another
    sweep trained meanwhile (we waited for its lock) reports ``reused`` instead and is not trained again.
    """
    with store.unit_lock(unit.key):
        if store.is_complete(unit.key):
            report({"done": 1, REUSED: 1})
            return store.record(unit.key)
        return _train(store, unit, report)


def _train(store: ArtifactStore, unit: Unit, report: Report) -> dict[str, Any]:
    _inject_failure(unit)
    begun = time.time()
    cfg = unit.run_config()
    # this node's feature cache: with object storage the driver's path may not exist here
    cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, cache_dir=str(store.features_dir)))
    data = load_fold_data(cfg.data, unit.fold, cfg.features.cache_dir)
    start = time.time()

    def on_epoch(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        report({"epoch": epoch, **metrics})

    # Imported here, not at the top: a pooled worker imports this module to start its first unit
    # (orchestrator.pool.UNIT_STACK) and MLflow plus matplotlib in the background (UNIT_FINISH), so they
    # stay off the first unit's start on a busy machine.
    from orchestrator.au_model import save_unit_model
    from reports.figures import unit_figures

    stage = get_stage(unit.stage)
    upstream = {name: store.unit_dir(key) for name, key in unit.upstream.items()}
    if store.remote:  # this node's cache may lack the features an upstream unit provides
        for name, path in upstream.items():
            for key in get_stage(name).cache_keys(cfg, data, path):
                store.fetch_features(key)
    with store.workspace(unit) as workdir:
        result = run_stage(stage, cfg=cfg, data=data, upstream=upstream, out_dir=workdir, callback=on_epoch)
        # Only when this command trains something on top of the unit (A0 and the backbones table do not): a
        # later command that reuses it builds the cache in its first unit that reads it.
        for key in stage.build_caches(cfg, data, workdir) if unit.downstream else []:
            store.publish_features(key)
        record = {
            "key": unit.key, "stage": unit.stage, "fold": unit.fold, "metrics": result.metrics,
            "history": result.history, TRAIN_SECONDS: time.time() - start, "host": socket.gethostname(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # Drawn here, in the trial, while other units train: the figures are part of the unit, reused with it.
        unit_figures(workdir, history=result.history, au_names=data.au_names, threshold=cfg.threshold, title=unit.name())
        if MODEL_JSON in stage.provides:  # a stage that saves a predicting model (stage 0, stage II) can be served
            save_unit_model(workdir, data.images_root / data.manifest["image"].iloc[0])
        record["unit_seconds"] = time.time() - begun  # all the trial's work: data, training, figures, model
        write_text(workdir / UNIT_RECORD, json.dumps(record, indent=1))
    report({"done": 1, **{k: v for k, v in result.metrics.items() if isinstance(v, float) and math.isfinite(v)}})
    return record


def claim_trial_share(threads: int) -> None:
    """Inside a Ray trial, hand its share to torch, where clile_core.hardware reads it: the thread count
    (which also sizes DataLoader workers) and, on a GPU, the memory fraction, so that trials sharing a GPU
    each stay within theirs (and size device-resident features by it)."""
    import ray

    torch.set_num_threads(max(1, threads))
    gpu_share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    if gpu_share > 0 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(gpu_share)))

