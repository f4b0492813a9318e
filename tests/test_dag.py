"""The dependency-aware searcher that feeds Ray Tune a whole plan: no level barriers, longest first,
failures drop their downstream units."""

from __future__ import annotations

from ray.tune.search import Searcher

from clile_core.config import RunConfig, to_dict
from orchestrator.sweep import DagSearcher, longest_first
from orchestrator.units import Unit

BASE = to_dict(RunConfig())


class FakeStore:
    def __init__(self):
        self.done: set[str] = set()

    def is_complete(self, key: str) -> bool:
        return key in self.done


def unit(stage: str, fold: int, upstream: dict[str, str], backbone: str = "resnet18", tag: str = "") -> Unit:
    config = {**BASE, "model": {**BASE["model"], "backbone": backbone}}
    return Unit(stage, fold, config, upstream, "manifest", key=f"{stage}-{fold}-{backbone}{tag}")


def chain(fold: int, backbone: str = "resnet18") -> list[Unit]:
    s0 = unit("stage0", fold, {}, backbone)
    s1 = unit("stage1", fold, {"stage0": s0.key}, backbone)
    return [s0, s1, unit("stage2", fold, {"stage0": s0.key, "stage1": s1.key}, backbone),
            unit("stage2", fold, {"stage0": s0.key}, backbone, tag="A1")]


def test_a_unit_starts_when_its_upstream_is_done_not_its_level():
    store = FakeStore()
    searcher = DagSearcher(chain(1) + chain(2), store, {"stage0": 1, "stage1": 1, "stage2": 1})
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert {first["unit"], second["unit"]} == {"stage0-1-resnet18", "stage0-2-resnet18"}
    assert searcher.suggest("t3") is None  # everything else waits on a running unit
    store.done.add("stage0-1-resnet18")
    searcher.on_trial_complete("t1" if first["unit"] == "stage0-1-resnet18" else "t2")
    # fold 2's stage 0 still runs, yet fold 1's stage I (longer chain below it) starts, then its A1 stage II
    assert searcher.suggest("t4")["unit"] == "stage1-1-resnet18"
    assert searcher.suggest("t5")["unit"] == "stage2-1-resnet18A1"
    assert searcher.suggest("t6") is None


def test_failure_drops_downstream_and_finishes():
    store = FakeStore()
    searcher = DagSearcher(chain(1), store, {"stage0": 2, "stage1": 1, "stage2": 1})
    assert searcher.suggest("t1") == {"unit": "stage0-1-resnet18", "threads": 2}
    store.done.add("stage0-1-resnet18")
    searcher.on_trial_complete("t1")
    assert searcher.suggest("t2")["unit"] == "stage1-1-resnet18"
    searcher.on_trial_complete("t2", error=True)
    assert searcher.failed == {"stage1-1-resnet18"}
    assert searcher.suggest("t3")["unit"] == "stage2-1-resnet18A1"
    assert searcher.skipped == {"stage2-1-resnet18": "stage1-1-resnet18"}
    assert searcher.suggest("t4") == Searcher.FINISHED


def test_trial_ending_without_its_unit_counts_as_failed():
    store = FakeStore()
    searcher = DagSearcher(chain(1)[:2], store, {"stage0": 1, "stage1": 1})
    searcher.suggest("t1")
    searcher.on_trial_complete("t1")  # no error, but the store has no stage 0
    assert searcher.failed == {"stage0-1-resnet18"}
    assert searcher.suggest("t2") == Searcher.FINISHED and searcher.skipped == {"stage1-1-resnet18": "stage0-1-resnet18"}


def test_costliest_stage0_first_then_longest_chain():
    units = chain(1, "resnet18") + chain(2, "resnet152")
    order = [u.key for u in longest_first(units)]
    assert order[:2] == ["stage0-2-resnet152", "stage0-1-resnet18"]
    assert order.index("stage1-1-resnet18") < order.index("stage2-1-resnet18")
