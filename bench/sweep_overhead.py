"""What the orchestrator costs and saves, in one run on the synthetic set:

1. the sweep phase of `python -m orchestrator.ablate` (one Tune run over the unit DAG; `ray.init`
   excluded, the first trial actor's start-up shown apart) vs the critical path of that DAG given the slots: the shortest time any scheduler could
   take with these unit durations (each unit's `unit_seconds`: data, training, figures, model). The bound
   is max(longest dependency chain, total unit time / slots). Goal: ratio <= 1.05. Also printed: a tighter
   bound that no scheduler can beat either (work that cannot start before its upstream chain ran has to
   fit in the slots after it: with a one-fold sweep nothing runs beside stage 0);
2. the report phase (tables and summary figures, after training) vs the sweep phase. Goal: <= 10 %;
3. the command's wall time vs the sum of its units' times (below 1: units ran concurrently);
4. where the sweep phase went, unit by unit (when the sweep wrote its timeline): each trial's start,
   its start-up (trial start to unit start: placement group, trial actor, the unit's worker and imports),
   the unit's own time and the slot time no unit used;
5. unless --no-naive: the naive way — `python -m clile_core.run` once per variant, each retraining
   stage 0 and recomputing features (no store, no cache) — vs the command.

    python bench/sweep_overhead.py [--folds 1 2 3] [--variants A0 ...] [--set key=value ...] [--no-naive]
                                   [--metrics FILE]

It runs the code it imports: to compare two commits, run it with PYTHONPATH set to each checkout in turn
(``bench/demo_time.sh`` does that for ``make demo``'s command). ``--metrics FILE`` writes every unit's
metrics by unit key, so two runs can be checked for identical results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clile_core.variants import load_variants

try:
    from clile_core.names import TIMELINE
except ImportError:  # an older commit, run for comparison, writes no timeline
    TIMELINE = None


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.time()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.time() - start, result.stderr


def critical_path_bound(seconds: dict[str, float], upstream: dict[str, list[str]], slots: int) -> tuple[float, float, float]:
    """(longest chain of unit times along dependencies, the issue's bound max(chain, total / slots), and a
    tighter lower bound that still holds for any scheduler: a unit cannot start before its upstream chain
    has run (its ``head``), so for every such start time t, all work that cannot start before t still has
    to run after it on the slots: max over t of t + that work / slots, and the chain)."""
    head: dict[str, float] = {}

    def earliest(key: str) -> float:
        if key not in head:
            head[key] = max((earliest(k) + seconds[k] for k in upstream[key] if k in seconds), default=0.0)
        return head[key]

    longest = max(earliest(k) + seconds[k] for k in seconds)
    tight = max(t + sum(seconds[k] for k in seconds if head[k] >= t) / slots for t in set(head.values()))
    return longest, max(longest, sum(seconds.values()) / slots), max(longest, tight)


def timing(stderr: str, pattern: str) -> float:
    found = re.search(pattern, stderr)
    if not found:
        sys.exit(f"the command printed no timing matching {pattern!r}")
    return float(found.group(1))


def breakdown(timeline: dict[str, dict], seconds: dict[str, float], sweep: float, slots: int) -> None:
    """Per unit, in start order: when its trial started, how long until the unit itself began (its trial's end
    minus the unit's own time), and the unit's time; then the slot time spent on neither."""
    rows = sorted((t["trial_start"], key, t) for key, t in timeline.items() if key in seconds and t["trial_end"] is not None)
    print(f"{'trial start':>11s} {'start-up':>8s} {'unit':>7s} {'end':>7s}  unit (seconds since the sweep's Tune run began)")
    startups = []
    for start, key, t in rows:
        startup = t["trial_end"] - seconds[key] - start
        startups.append(startup)
        print(f"{start:11.1f} {startup:8.1f} {seconds[key]:7.1f} {t['trial_end']:7.1f}  {t['name']}")
    idle = slots * sweep - sum(seconds.values())
    print(f"trial start-up: total {sum(startups):.1f}s, mean {sum(startups) / max(len(startups), 1):.1f}s, "
          f"max {max(startups, default=0.0):.1f}s; slot time used by no unit: {idle:.1f}s of {slots} x {sweep:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=None, help="ablation variants (default: all six)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--max-concurrent", type=int, default=None, help="slots (default: one per CPU)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive per-variant runs")
    parser.add_argument("--metrics", type=Path, help="write each unit's metrics here, by unit key (JSON)")
    args = parser.parse_args()
    sets = [arg for pair in args.overrides for arg in ("--set", pair)]
    folds = [str(f) for f in args.folds]
    variants = args.variants or list(load_variants())
    slots = args.max_concurrent or os.cpu_count() or 1
    extra = ["--variants", *variants, "--max-concurrent", str(slots)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {slots} slots; folds {' '.join(folds)}; "
          f"variants {' '.join(variants)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Generate the dataset first so no timing includes it.
        timed([sys.executable, "-m", "orchestrator.ablate", "--dry-run", "--folds", *folds, *extra, *sets], work)
        command, stderr = timed([sys.executable, "-m", "orchestrator.ablate", "--folds", *folds, *extra, *sets], work)
        sweep, report = timing(stderr, r"timing: sweep phase ([\d.]+)s"), timing(stderr, r"timing: report phase ([\d.]+)s")
        startup = timing(stderr, r"start-up ([\d.]+)s")
        store = work / "clile_store"
        records = {p.parent.name: json.loads(p.read_text()) for p in (store / "units").glob("*/unit.json")}
        seconds = {key: r["unit_seconds"] for key, r in records.items()}
        upstream = {key: list(json.loads((store / "specs" / f"{key}.json").read_text())["upstream"].values())
                    for key in records}
        chain, bound, tight = critical_path_bound(seconds, upstream, slots)
        total = sum(seconds.values())
        print(f"units: {len(records)}, sum of unit times {total:.1f}s, longest chain {chain:.1f}s, "
              f"critical path given {slots} slots {bound:.1f}s (tighter lower bound, no unit before its upstream "
              f"chain: {tight:.1f}s)")
        print(f"sweep phase {sweep:.1f}s, of which {startup:.1f}s before the first unit started (Ray's first trial "
              f"actor); report phase {report:.1f}s; whole command {command:.1f}s (incl. Python/Ray/MLflow start-up)")
        print(f"ratio sweep phase / critical path given the slots: {sweep / bound:.3f} (goal <= 1.05); "
              f"without the first actor's start-up: {(sweep - startup) / bound:.3f}; sweep phase / tighter bound: "
              f"{sweep / tight:.3f}")
        print(f"ratio report phase / sweep phase: {report / sweep:.1%} (goal <= 10%)")
        print(f"ratio command wall / sum of unit times: {command / total:.2f}")
        timelines = sorted((store / "ray_results").glob(f"*/{TIMELINE}")) if TIMELINE else []
        if timelines:
            breakdown(json.loads(timelines[-1].read_text()), seconds, sweep, slots)
        if args.metrics:
            args.metrics.write_text(json.dumps({key: r["metrics"] for key, r in sorted(records.items())}, indent=1))
        if args.no_naive:
            return
        naive = 0.0
        for fold in folds:
            for variant in variants:
                naive += timed([sys.executable, "-m", "clile_core.run", "--variant", variant, "--fold", fold,
                                "--out", str(work / f"naive-{variant}-{fold}"),
                                "--set", f"features.cache_dir={work / f'naive-cache-{variant}-{fold}'}", *sets], work)[0]
        print(f"naive: one clile_core.run per variant and fold, nothing shared: {naive:.0f}s")
        print(f"ratio naive / command wall: {naive / command:.2f}")


if __name__ == "__main__":
    main()
