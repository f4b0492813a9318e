"""A new sweep command is one file (README "What to edit"): a module with ``build_plan`` and ``report`` handed
to ``orchestrator.cli.run_command`` gets the shared arguments, the store, tracking and the DAG scheduler."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sweep_helpers import TINY

REPO = Path(__file__).resolve().parents[1]

COMMAND = '''
    """python -m lone_a0: variant A0 alone on each fold (a toy sweep command)."""
    import sys

    from clile_core.variants import get_variant
    from orchestrator.cli import run_command
    from orchestrator.report import print_table
    from orchestrator.units import Plan, add_variant_fold


    def build_plan(ctx):
        plan = Plan("lone_a0")
        for fold in ctx.args.folds:
            for seed in ctx.seeds:
                add_variant_fold(plan, ctx.cfg, get_variant("A0"), fold, ctx.manifest_hash, seed=seed)
        return plan


    def report(ctx, plan, tracker, outcome):
        print_table(ctx, "A0 alone", rows=["A0"], tracker=tracker, outcome=outcome)


    if __name__ == "__main__":
        sys.exit(run_command("python -m lone_a0", __doc__, "lone-a0", None, build_plan=build_plan, report=report))
'''


def test_a_sweep_command_is_one_file(tmp_path):
    (tmp_path / "lone_a0.py").write_text(textwrap.dedent(COMMAND))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "lone_a0", *TINY, "--folds", "1", "2", "--seeds", "0", "1", "--dry-run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    planned = [line for line in result.stdout.splitlines() if "will run" in line]
    # one stage-0 unit per (fold, seed), named by the shared planner; the store is the command's default
    assert len(planned) == 4 and all("A0 · fold" in line and "stage 0" in line for line in planned)
    assert "4 units: 0 cached, 4 to run" in result.stdout
    assert "[lone_a0] store" in result.stderr and (tmp_path / "clile_store").is_dir()
