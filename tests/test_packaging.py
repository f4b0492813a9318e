"""A regular (non-editable) install carries presets, variants, search spaces and published tables."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_runs_a_dry_run_from_an_empty_directory(tmp_path):
    source = tmp_path / "src"  # build from the tracked files only, leaving the checkout untouched
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, text=True)
    wheel = next((tmp_path / "dist").glob("clile-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("search_spaces/variants.yaml", "search_spaces/datasets/bp4d.yaml", "search_spaces/search.yaml",
                 "search_spaces/backbones.yaml", "reports/published/bp4d_ablation.csv"):
        assert data in names, data
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    # -I: ignore the environment's paths and the editable install; only the scratch install (and the venv's
    # third-party packages, via site-packages) can provide our modules
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[1:]; import runpy, orchestrator;"
            "assert orchestrator.__file__.startswith(sys.argv[0]), orchestrator.__file__;"
            "runpy.run_module('orchestrator.ablate', run_name='__main__')")
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(target), "--dry-run", "--folds", "1", "--set", "data.synthetic_subjects=6",
         "--set", "data.synthetic_frames=4", "--set", "data.synthetic_size=32", "--set", "data.input_size=32"],
        cwd=empty, capture_output=True, text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 units: 0 cached, 8 to run" in result.stdout
