"""The MLflow UI in a real headless browser, on a store made by a real tiny sweep: the experiment lists the
parent run, its nested unit runs expand under it, and the parent's artifacts hold the ablation table."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import free_port, wait_for_http

CHROMIUM = "/usr/bin/chromium"
# Offline, sandbox-free headless Chromium (CI containers run as root and have no network).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY = ["--set", "model.weights=none", "--set", "data.input_size=32", "--set", "stage0.epochs=1",
        "--set", "stage1.epochs=1", "--set", "stage2.epochs=1", "--set", "model.dim=32", "--set", "model.heads=4",
        "--set", "model.ff_dim=64", "--set", "data.synthetic_subjects=6", "--set", "data.synthetic_frames=12",
        "--set", "data.synthetic_size=40"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is needed for the browser test")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} missing: apt-get install chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A folder holding mlflow.db and mlartifacts/ from ``orchestrator.ablate`` on tiny synthetic data."""
    root = tmp_path_factory.mktemp("sweep")
    result = subprocess.run([sys.executable, "-m", "orchestrator.ablate", "--dataset", "synthetic", "--folds", "1",
                             "--variants", "A0", "CL-ILE", *TINY], cwd=root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ablation (Table 3)" in result.stdout
    return root


def test_ui_shows_parent_nested_units_and_ablation_table(swept, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # its own session: the server's workers are stopped with it as one process group
    server = subprocess.Popen([sys.executable, "-m", "orchestrator.ui", "--port", str(port)], cwd=swept,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        printed = [server.stdout.readline() for _ in range(3)]
        runs_url = printed[2].split("clile-ablation: ")[1].strip()
        assert runs_url.startswith(f"{url}/#/experiments/") and runs_url.endswith("?workflowType=machine_learning")
        wait_for_http(f"{url}/health", server, timeout=120)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(30_000)
                # the address orchestrator.ui prints opens the runs table, not MLflow 3's GenAI overview
                page.goto(runs_url, wait_until="domcontentloaded")

                parent = page.get_by_role("link", name=re.compile(r"^ablate · synthetic · ")).first
                parent.wait_for()
                row = page.locator("[role=row]").filter(has=parent)
                row.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand nested runs
                for child in ("CL-ILE · fold 1 · seed 0 · resnet18 · stage II", "CL-ILE · fold 1 · seed 0 · resnet18 · stage I",
                              "A0+CL-ILE · fold 1 · seed 0 · resnet18 · stage 0"):
                    page.get_by_role("link", name=child, exact=True).first.wait_for()
                page.get_by_text(re.compile(r"^synthetic \([0-9a-f]{16}\)")).first.wait_for()  # its Dataset column
                page.screenshot(path=tmp_path / "runs.png")

                parent.click()
                page.get_by_role("tab", name="Artifacts").first.click()
                page.get_by_text("tables", exact=True).first.click()
                page.get_by_text("ablation.md", exact=True).first.click()
                page.get_by_text("Ablation (Table 3): average F1").first.wait_for()
                page.get_by_role("cell", name="CL-ILE", exact=True).first.wait_for()
                shot = tmp_path / "ablation_table.png"
                page.screenshot(path=shot)
                print(f"screenshots: {tmp_path / 'runs.png'} {shot}")
            finally:
                browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert shot.stat().st_size > 0 and (tmp_path / "runs.png").stat().st_size > 0
