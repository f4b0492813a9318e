"""The resource planner on fake cluster descriptions, and how a trial's share sizes its DataLoaders (no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from clile_core import hardware
from clile_core.config import ConfigError, load_run_config
from orchestrator.cli import common_parser
from orchestrator.resources import plan_resources

CLUSTERS = [(cpus, gpus) for cpus in (2, 16, 64) for gpus in (0, 1, 4)]


@pytest.mark.parametrize("cpus,gpus", CLUSTERS)
@pytest.mark.parametrize("stage", ["stage0", "stage1", "stage2"])
def test_every_plan_fits_the_cluster_so_no_trial_stays_pending(cpus, gpus, stage):
    plan = plan_resources({"CPU": float(cpus), "GPU": float(gpus)}, stage, 0.25, None)
    assert plan.cpu >= 1 and plan.max_concurrent >= 1
    assert plan.cpu * plan.max_concurrent <= cpus
    assert plan.gpu * plan.max_concurrent <= gpus
    if gpus == 0:
        assert plan.as_ray() == {"cpu": 1, "gpu": 0.0} and plan.max_concurrent == cpus  # CPU-only: as before


@pytest.mark.parametrize("cpus,gpus,cpu,concurrent", [(2, 1, 2, 1), (16, 1, 16, 1), (16, 4, 4, 4), (64, 4, 16, 4), (2, 4, 1, 2)])
def test_stage0_gets_a_whole_gpu_and_the_nodes_cpus_per_gpu(cpus, gpus, cpu, concurrent):
    plan = plan_resources({"CPU": cpus, "GPU": gpus}, "stage0", 0.25, None)
    assert (plan.cpu, plan.gpu, plan.max_concurrent) == (cpu, 1.0, concurrent)


@pytest.mark.parametrize("cpus,gpus,cpu,concurrent", [(2, 1, 1, 2), (16, 1, 4, 4), (16, 4, 1, 16), (64, 1, 16, 4), (64, 4, 4, 16)])
def test_feature_stages_share_a_gpu_with_a_cpu_share_per_slot(cpus, gpus, cpu, concurrent):
    plan = plan_resources({"CPU": cpus, "GPU": gpus}, "stage2", 0.25, None)
    assert (plan.cpu, plan.gpu, plan.max_concurrent) == (cpu, 0.25, concurrent)


def test_cpu_share_override_max_concurrent_and_cpu_stage_trials():
    cluster = {"CPU": 64, "GPU": 4}
    assert plan_resources(cluster, "stage0", 0.25, None, cpus_per_gpu_trial=8).as_ray() == {"cpu": 8, "gpu": 1.0}
    assert plan_resources(cluster, "stage0", 0.25, None, cpus_per_gpu_trial=40).max_concurrent == 1  # 64 // 40
    assert plan_resources(cluster, "stage0", 0.25, None, cpus_per_gpu_trial=500).cpu == 64  # capped: it would never start
    assert plan_resources(cluster, "stage2", 0.25, 3).max_concurrent == 3
    assert plan_resources(cluster, "stage2", 0.3, None).max_concurrent == 12  # three 0.3-slots per GPU
    assert plan_resources(cluster, "stage2", 0.0, None).as_ray() == {"cpu": 1, "gpu": 0.0}  # stages I/II on CPU
    assert plan_resources({"CPU": 8, "GPU": 0.5}, "stage0", 0.25, None).gpu == 0.0  # no whole GPU: CPU


def test_cpu_share_flag_refuses_zero(capsys):
    parser = common_parser("x", "x", "x")
    assert parser.parse_args(["--cpus-per-gpu-trial", "6"]).cpus_per_gpu_trial == 6
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--cpus-per-gpu-trial", "0"])
    assert exit_info.value.code == 2 and "--cpus-per-gpu-trial" in capsys.readouterr().err


def test_loader_workers_come_from_the_trials_cpus(monkeypatch):
    monkeypatch.setattr(hardware, "trial_cpus", lambda: 6)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert hardware.loader_options("auto", cuda) == {"num_workers": 5, "pin_memory": True, "persistent_workers": True,
                                                     "prefetch_factor": hardware.PREFETCH_BATCHES}
    assert hardware.loader_options("auto", cpu) == {"num_workers": 0, "pin_memory": False}  # as before on CPU
    assert hardware.loader_options(2, cpu)["num_workers"] == 2 and hardware.loader_options(2, cpu)["persistent_workers"]
    monkeypatch.setattr(hardware, "trial_cpus", lambda: 1)
    assert hardware.loader_options("auto", cuda)["num_workers"] == 0


def test_gpu_budget_reads_the_share_of_the_current_device_when_device_cuda_names_no_index(monkeypatch):
    """device=cuda gives torch.device('cuda'), whose index is None; torch's fraction query refuses that (an
    H100 run of stage I with features.resident=auto failed on it), so the budget asks for the current device."""
    def fraction(device):
        index = device if isinstance(device, int) else device.index
        if index is None:
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
        return {0: 1.0, 1: 0.25}[index]

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", fraction)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2**30)
    assert hardware.gpu_budget_bytes(torch.device("cuda"), 0.5) == 80 * 2**30 * 0.25 * 0.5 - 2**30
    assert hardware.gpu_budget_bytes(torch.device("cuda", 0), 0.5) == 80 * 2**30 * 0.5 - 2**30


def test_num_workers_takes_auto_or_a_count():
    assert load_run_config("synthetic").data.num_workers == "auto"
    assert load_run_config("synthetic", None, ["data.num_workers=3"]).data.num_workers == 3
    with pytest.raises(ConfigError, match=r"key 'data.num_workers'.*'many' is not allowed; choose one of \['auto'\]"):
        load_run_config("synthetic", None, ["data.num_workers=many"])
    with pytest.raises(ConfigError, match=r"data.num_workers.*out of range"):
        load_run_config("synthetic", None, ["data.num_workers=-1"])
    with pytest.raises(ConfigError, match=r"features.resident.*choose one of \['auto', 'always', 'never'\]"):
        load_run_config("synthetic", None, ["features.resident=sometimes"])
