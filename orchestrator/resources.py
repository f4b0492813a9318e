"""Ray start-up and per-stage trial resources, decided from what the cluster actually has."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clile_core.stages import get_stage
from orchestrator import ray_watchdog
from orchestrator.execute import FAIL_ENV
from orchestrator.pool import ray_system_config


def init_ray(address: str | None) -> dict[str, float]:
    """Start (or join) Ray quietly and return ``ray.cluster_resources()``."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    forwarded = {k: os.environ[k] for k in (FAIL_ENV,) if k in os.environ}
    runtime_env = {"env_vars": forwarded} if forwarded else None
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # Our own single-node Ray must not listen on the network (its ports take jobs from anyone who
        # reaches them); Ray binds to loopback only when it believes clusters are unsupported here.
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env, log_to_driver=False,
                 _system_config=ray_system_config(os.cpu_count() or 1))
        ray_watchdog.start()  # our Ray's agents would outlive a driver killed with -9
    return ray.cluster_resources()


@dataclass(frozen=True)
class TrialResources:
    cpu: float
    gpu: float
    max_concurrent: int

    def as_ray(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


def plan_resources(
    cluster: dict[str, float], stage: str, gpus_per_trial: float, max_concurrent: int | None,
    *, cpus_per_gpu_trial: int | None = None,
) -> TrialResources:
    """What one trial of ``stage`` asks Ray for, and how many run at once.

    A stage that trains on images (stage 0: the backbone) gets a whole GPU, plus a CPU share for decoding
    and augmenting them in DataLoader workers (default: the node's CPUs divided by its GPUs). The others
    (stages I/II) train on cached features: ``gpus_per_trial`` of one GPU and the CPUs that leave every GPU slot a share.
    ``cpus_per_gpu_trial`` overrides the CPU share of GPU trials. Without a GPU in the cluster (or with
    ``gpus_per_trial`` 0 for stages I/II) every trial runs on CPU, as many as ``max_concurrent`` (default:
    one per CPU) — asking for a GPU there would leave the trials PENDING forever.
    """
    cpus = max(1, int(cluster.get("CPU", 1)))
    gpus = int(cluster.get("GPU", 0.0))  # a trial's GPU fraction never spans GPUs, so count whole ones
    gpu = 1.0 if get_stage(stage).on_images else min(1.0, gpus_per_trial)
    if gpus < 1 or gpu <= 0:
        concurrent = max(1, max_concurrent or cpus)
        return TrialResources(max(1, cpus // concurrent), 0.0, concurrent)
    slots = gpus * int(1 / gpu + 1e-9)  # trials the GPUs hold at once
    share = min(cpus, cpus_per_gpu_trial or max(1, cpus // slots))  # a share above the cluster's CPUs never starts
    concurrent = max(1, min(slots, cpus // share, max_concurrent or slots))
    return TrialResources(share, gpu, concurrent)


def explain(cluster: dict[str, float], gpus_per_trial: float) -> str:
    gpus = cluster.get("GPU", 0.0)
    line = f"cluster: {int(cluster.get('CPU', 0))} CPU, {gpus:g} GPU"
    if gpus < 1 and gpus_per_trial > 0:
        line += " — no GPU available, every trial runs on CPU"
    return line

