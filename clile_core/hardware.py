"""What a trial may use of its machine: DataLoader workers from its CPU share, GPU memory from its GPU share,
and the CUDA settings that keep an image model's GPU busy.

A trial's share reaches clile_core through torch itself, so the core needs no Ray: the orchestrator sets
torch's thread count to the trial's CPUs and the per-process CUDA memory fraction to its GPU share
(orchestrator/execute.py); a standalone run has the whole machine.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clile_core.data.images import normalize

PREFETCH_BATCHES = 4  # per worker: enough to cover a slow JPEG batch while the GPU runs the previous ones


def trial_cpus() -> int:
    return max(1, torch.get_num_threads())


def loader_workers(setting: int | str, device: torch.device) -> int:
    """``data.num_workers`` resolved: 'auto' is the trial's CPUs minus the one driving the GPU on CUDA, and
    0 on CPU, where the trial's CPUs already run the model and worker processes would compete with it."""
    if setting != "auto":
        return int(setting)
    return trial_cpus() - 1 if device.type == "cuda" else 0


def loader_options(setting: int | str, device: torch.device) -> dict[str, Any]:
    """DataLoader keyword arguments: workers, pinned host memory on CUDA (asynchronous copies), and workers
    that persist across epochs and prefetch when there are any."""
    workers = loader_workers(setting, device)
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_BATCHES)
    return options


def prepare_image_model(model: nn.Module, device: torch.device) -> nn.Module:
    """On CUDA: channels_last weights (the layout tensor cores convolve without transposes) and cuDNN's
    autotuner (inputs keep one shape, so the tuned choice is reused every step) — unless the run asked for
    deterministic kernels (``deterministic``), which the autotuner's per-run choice would break."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
        model = model.to(memory_format=torch.channels_last)
    return model


def images_to(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch from a pinned DataLoader onto ``device`` without waiting for it, in the model's layout,
    normalised there (``clile_core.data.images.normalize``)."""
    if device.type == "cuda":
        return normalize(pixels.to(device, non_blocking=True, memory_format=torch.channels_last))
    return normalize(pixels.to(device))


def gpu_budget_bytes(device: torch.device, fraction: float) -> int:
    """``fraction`` of this process's GPU share (the per-process memory fraction the orchestrator set,
    1 in a standalone run), minus what the process has already allocated."""
    if device.index is None:  # torch.device("cuda"), as device=cuda gives: the fraction query needs an index
        device = torch.device("cuda", torch.cuda.current_device())
    share = torch.cuda.get_device_properties(device).total_memory * torch.cuda.get_per_process_memory_fraction(device)
    return int(share * fraction) - torch.cuda.memory_allocated(device)
