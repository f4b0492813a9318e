"""How busy the training paths keep a GPU, each measured against its own ceiling in one run.

* stage 0: images/s of ``train_stage0`` (aligned 240-px JPEGs on disk -> DataLoader workers -> 224-px
  uint8 crops -> the model) vs the same model and loop on random pixels already on the device (the compute
  ceiling), for ResNet-18 and ResNet-50; goal on an H100/H200-class GPU: >= 60 % of the ceiling; and the
  training loader alone (decode, augment, copy to the device, normalise), the input pipeline's own ceiling;
* feature extraction: images/s of ``stage0_features`` (every cached view of every image);
* stage II: steps/s of ``train_stage2`` with the cached tokens device-resident vs streamed from the
  memory-mapped cache through the CPU; goal: >= 5x; eager and, at full size, with ``stage2.compile``;
* peak GPU memory of each part.

Rates come from the second epoch (the first pays worker start-up, cuDNN autotuning and the device copy).

    python bench/gpu_throughput.py            # full size, for a GPU (bench/gpu_check.sh)
    python bench/gpu_throughput.py --small    # CI-sized, runs on CPU (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from clile_core.config import RunConfig, load_run_config
from clile_core.data.fold_data import FoldData
from clile_core.data.folds import FoldSplit
from clile_core.data.images import view_names
from clile_core.features import FeatureStore, _load
from clile_core.hardware import images_to, loader_workers, prepare_image_model
from clile_core.losses import selective_learning_weights, weighted_bce
from clile_core.models.backbones import create_backbone
from clile_core.models.encoder import Stage0Model
from clile_core.stages import stage0_features
from clile_core.training.loop import Evaluation, fit, select_device
from clile_core.names import BACKBONE_FILE
from clile_core.training.stage0 import train_loader, train_stage0
from clile_core.training.stage2 import train_stage2

AUS = 12  # BP4D's AU set


@dataclass
class Size:
    images: int  # JPEGs written; all but ``held_out`` train stage 0
    frames: int  # cached frames of the stage-II benchmark
    held_out: int  # validation rows (evaluated every epoch, so few), then test and seen rows
    batch: int  # stage 0's; the BP4D preset's 64 at full size
    input_size: int  # stage 0's crop of the 240-px JPEGs
    backbones: tuple[str, ...]
    encoder: tuple[str, ...] = ()  # stage-II overrides of the BP4D preset's encoder (512-d, 2 layers)
    compile_options: tuple[bool, ...] = (False, True)  # stage II eager, then with torch.compile


FULL = Size(images=6144, frames=20000, held_out=64, batch=64, input_size=224, backbones=("resnet18", "resnet50"))
# CI size: checks that every part runs; its rates say nothing about a GPU (no compile: minutes on 2 cores)
SMALL = Size(images=48, frames=256, held_out=16, batch=8, input_size=112, backbones=("resnet18",),
             encoder=("model.dim=64", "model.heads=4", "model.ff_dim=128"), compile_options=(False,))


def fold_of(n: int, held_out: int, images_root: Path, seed: int = 0) -> FoldData:
    """A fold over ``n`` frames: the last ``held_out`` rows split between validation, test and seen."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, AUS)) < 0.3).astype(np.int64)
    manifest = pd.DataFrame({"image": [f"{i:06d}.jpg" for i in range(n)], "subject": "S"})
    train = np.arange(n - held_out)
    quarter = held_out // 4
    split = FoldSplit(train, np.arange(n - held_out, n - 2 * quarter), np.arange(n - 2 * quarter, n - quarter),
                      np.arange(n - quarter, n), ["S"], [], [])
    return FoldData("bench", 1, manifest, images_root, labels, [f"AU{i}" for i in range(AUS)], split, f"bench{n}")


def write_faces(root: Path, n: int, size: int = 240) -> None:
    """Smooth random images at the aligned-face size, JPEG quality 90: decode work like real frames'."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        grain = rng.integers(-12, 13, (size, size, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:06d}.jpg", quality=90)


def second_epoch_rate(history: list[dict[str, float]], work: int) -> float:
    return work / history[-1]["epoch_seconds"]


def peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return f"{peak:.2f} GiB"


def stage0_pipeline(cfg: RunConfig, fold: FoldData, out: Path) -> float:
    result = train_stage0(cfg, fold, out)
    steps = len(fold.split.train) // cfg.stage0.batch_size  # drop_last
    return second_epoch_rate(result.history, steps * cfg.stage0.batch_size)


def stage0_loader(cfg: RunConfig, fold: FoldData, device: torch.device) -> float:
    """The training loader alone, as ``train_stage0`` uses it: its second pass (the workers persist), each batch
    copied to the device and normalised there."""
    loader = train_loader(fold, cfg, device)
    for _ in range(2):
        start, images = time.time(), 0
        for pixels, _, _ in loader:
            images += len(images_to(pixels, device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return images / (time.time() - start)


def stage0_ceiling(cfg: RunConfig, steps: int, device: torch.device) -> float:
    """The same model, optimiser, autocast and loss as ``train_stage0``, fed one batch of pixels kept on the
    device in the model's layout (``images_to`` then only normalises it, at every step, as the pipeline's are)."""
    torch.manual_seed(cfg.seed)
    model = prepare_image_model(Stage0Model(create_backbone(cfg.model.backbone, "none"), AUS).to(device), device)
    shape = (cfg.stage0.batch_size, 3, cfg.data.input_size, cfg.data.input_size)
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8).to(device, memory_format=torch.channels_last)
    labels = (torch.rand(cfg.stage0.batch_size, AUS, device=device) < 0.3).float()

    def terms(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        bce = weighted_bce(model(images_to(batch[0], device)).float(), batch[1], selective_learning_weights(batch[1]))
        return {"bce": bce, "loss": bce}

    validation = Evaluation(np.full((2, AUS), 0.5), np.array([[1] * AUS, [0] * AUS]))
    result = fit(model, cfg.stage0, stage="ceiling", train_batches=lambda: [(pixels, labels)] * steps, loss_terms=terms,
                 validate=lambda: validation, au_names=[f"AU{i}" for i in range(AUS)], threshold=0.5, device=device)
    return second_epoch_rate(result.history, steps * cfg.stage0.batch_size)


def token_store(path: Path, frames: int, tokens: int, dim: int) -> FeatureStore:
    """A cache on disk in the real layout (fp16 tensors per view, the views the BP4D preset trains on: centre,
    flip and its random crops), loaded memory-mapped as stages I/II do."""
    path.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    views = view_names(load_run_config("bp4d").features.random_crops)
    for view in views:
        torch.save(torch.randn(frames, tokens, dim, generator=gen).half(), path / f"{view}.pt")
    (path / "meta.json").write_text(json.dumps({"key": "bench", "views": views, "frames": frames}))
    store = _load(path, "bench")
    assert store is not None
    return store


def stage2_rate(size: Size, fold: FoldData, store: FeatureStore, *, out: Path, ckpt: Path, device: torch.device,
                resident: str, compiled: bool) -> float:
    """``train_stage2`` without stage I (no L_Orth): BCE + L_Contra on the BP4D preset's encoder and batch."""
    cfg = load_run_config("bp4d", None, [*OVERRIDES, *size.encoder, f"features.resident={resident}", "stage2.epochs=2",
                                         "stage2.use_orth=false", f"stage2.compile={str(compiled).lower()}",
                                         f"device={device.type}"])
    start = time.time()
    result = train_stage2(cfg, fold, store, out, backbone_ckpt=ckpt)
    steps = -(-len(fold.split.train) // cfg.stage2.batch_size)
    rate = second_epoch_rate(result.history, steps)
    print(f"  stage II, {resident:6s} tokens, {'compiled' if compiled else 'eager':8s}: {rate:8.1f} steps/s "
          f"(batch {cfg.stage2.batch_size}; whole run with set-up {time.time() - start:.1f}s), peak {peak_gib(device)}",
          flush=True)
    return rate


OVERRIDES = ["model.weights=none", "stage0.epochs=2", "stage0.lr=0.01"]


def run_config(size: Size, backbone: str, device: torch.device, tmp: Path) -> RunConfig:
    """The BP4D preset at the bench's size: stage 0 of ``backbone``, its cache in ``tmp``."""
    return load_run_config("bp4d", None, [*OVERRIDES, f"model.backbone={backbone}", f"stage0.batch_size={size.batch}",
                                          f"data.input_size={size.input_size}", f"device={device.type}",
                                          f"features.cache_dir={tmp / 'features'}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CI size: a few images and frames, ResNet-18 only; runs on CPU")
    parser.add_argument("--backbones", nargs="+", help="default: resnet18 resnet50 (resnet18 with --small)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    size = SMALL if args.small else FULL
    device = select_device(args.device)
    batch = size.batch
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, GPU {gpu}, torch {torch.__version__}; "
          f"DataLoader workers (data.num_workers=auto): {loader_workers('auto', device)}", flush=True)
    ratios: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        start = time.time()
        write_faces(tmp / "images", size.images)
        fold = fold_of(size.images, size.held_out, tmp / "images")
        print(f"wrote {size.images} 240-px JPEGs in {time.time() - start:.1f}s; {len(fold.split.train)} train stage 0 "
              f"at {size.input_size} px, batch {batch}", flush=True)
        backbones = args.backbones or size.backbones
        loader = stage0_loader(run_config(size, backbones[0], device, tmp), fold, device)  # the same for every backbone
        print(f"  stage 0 loader alone: {loader:8.1f} images/s (decode, augment, copy, normalise)", flush=True)
        for backbone in backbones:
            cfg = run_config(size, backbone, device, tmp)
            pipeline = stage0_pipeline(cfg, fold, tmp / backbone)
            print(f"  stage 0, {backbone}: pipeline {pipeline:8.1f} images/s, peak {peak_gib(device)}", flush=True)
            ceiling = stage0_ceiling(cfg, len(fold.split.train) // batch, device)
            print(f"  stage 0, {backbone}: ceiling  {ceiling:8.1f} images/s, peak {peak_gib(device)}", flush=True)
            ratios.append((f"stage 0 {backbone} pipeline / ceiling", pipeline / ceiling, 0.6))
            start = time.time()
            stage0_features(cfg, fold, tmp / backbone)
            views = view_names(cfg.features.random_crops)
            extraction = len(views) * size.images / (time.time() - start)
            print(f"  feature extraction, {backbone}: {extraction:8.1f} images/s ({len(views)} views; a loader per view "
                  f"and the cache writes included), peak {peak_gib(device)}", flush=True)
        ckpt = tmp / backbones[0] / BACKBONE_FILE  # only recorded by the saved stage-II model
        store = token_store(tmp / "tokens", size.frames, tokens=49, dim=512)  # ResNet-18's 7x7x512 at 224 px
        frames = fold_of(size.frames, size.held_out, tmp / "images")
        print(f"stage II on {size.frames} cached frames (ResNet-18 tokens 49x512 fp16, "
              f"{len(store.views) * store.views['centre'].nbytes / 2**30:.2f} GiB for {len(store.views)} views)", flush=True)
        peak_gib(device)
        for compiled in size.compile_options:
            rates = {resident: stage2_rate(size, frames, store, out=tmp / f"s2-{resident}-{compiled}", ckpt=ckpt,
                                           device=device, resident=resident, compiled=compiled)
                     for resident in ("never", "always")}
            ratios.append((f"stage II resident / streamed{', compiled' if compiled else ''}",
                           rates["always"] / rates["never"], 5.0))
    print("\nratios (measured in this run):")
    for name, value, goal in ratios:
        verdict = "" if device.type != "cuda" else (" goal met" if value >= goal else " BELOW GOAL")
        print(f"  {name:40s} {value:6.2f}  (goal on a GPU >= {goal}){verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
