"""What the orchestrator costs and saves, in one run on the synthetic set:

1. wall time of `python -m orchestrator.ablate` (all six variants) vs the sum of its units' own
   training times (unit.json `train_seconds`): the scheduling/tracking overhead, or the gain from
   running units concurrently when the ratio is below 1;
2. the naive way — `python -m clile_core.run` once per variant, each retraining stage 0 and
   recomputing features (no store, no cache) — vs the sweep.

    python bench/sweep_overhead.py [--folds 1 2 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clile_core.variants import load_variants


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.time()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    sets = [arg for pair in args.overrides for arg in ("--set", pair)]
    folds = [str(f) for f in args.folds]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; folds {' '.join(folds)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Generate the dataset first so neither timing includes it.
        timed([sys.executable, "-m", "orchestrator.ablate", "--dry-run", "--folds", *folds, *sets], work)
        sweep = timed([sys.executable, "-m", "orchestrator.ablate", "--folds", *folds, *sets], work)
        records = [json.loads(p.read_text()) for p in (work / "clile_store" / "units").glob("*/unit.json")]
        units = sum(r["train_seconds"] for r in records)
        print(f"sweep wall time: {sweep:.0f}s for {len(records)} units; sum of unit training times: {units:.0f}s")
        naive = 0.0
        for fold in folds:
            for variant in load_variants():
                naive += timed([sys.executable, "-m", "clile_core.run", "--variant", variant, "--fold", fold,
                                "--out", str(work / f"naive-{variant}-{fold}"),
                                "--set", f"features.cache_dir={work / f'naive-cache-{variant}-{fold}'}", *sets], work)
        print(f"naive: one clile_core.run per variant and fold, nothing shared: {naive:.0f}s")
        print(f"ratio sweep wall / sum of unit times: {sweep / units:.2f}")
        print(f"ratio naive / sweep wall: {naive / sweep:.2f}")


if __name__ == "__main__":
    main()
