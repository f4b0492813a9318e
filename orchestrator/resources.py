"""Ray start-up and per-stage trial resources, decided from what the cluster actually has."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from orchestrator.execute import FAIL_ENV


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
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    return ray.cluster_resources()


@dataclass(frozen=True)
class TrialResources:
    cpu: float
    gpu: float
    max_concurrent: int

    def as_ray(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


def plan_resources(cluster: dict[str, float], stage: str, gpus_per_trial: float, max_concurrent: int | None) -> TrialResources:
    """Stage 0 trains the backbone: a whole GPU when there is one. Stages I/II run on cached features:
    a fraction of one. Without a GPU in the cluster every trial runs on CPU (asking would hang PENDING)."""
    cpus = max(1, int(cluster.get("CPU", 1)))
    gpus = cluster.get("GPU", 0.0)
    concurrent = max(1, max_concurrent or cpus)
    cpu_per_trial = max(1, cpus // concurrent)
    if gpus < 1:
        return TrialResources(cpu_per_trial, 0.0, concurrent)
    gpu = 1.0 if stage == "stage0" else min(1.0, gpus_per_trial)
    return TrialResources(cpu_per_trial, gpu, concurrent)


def explain(cluster: dict[str, float], gpus_per_trial: float) -> str:
    gpus = cluster.get("GPU", 0.0)
    line = f"cluster: {int(cluster.get('CPU', 0))} CPU, {gpus:g} GPU"
    if gpus < 1 and gpus_per_trial > 0:
        line += " — no GPU available, every trial runs on CPU"
    return line


def warn(message: str) -> None:
    print(f"[orchestrator] {message}", file=sys.stderr)
