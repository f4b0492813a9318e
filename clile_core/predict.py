"""``python -m clile_core.predict --model DIR IMAGE…``: per-AU probabilities and decisions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from clile_core.data.images import eval_transform, normalize, read_image
from clile_core.model_io import load_model
from clile_core.log import get_logger

log = get_logger("predict")


@torch.no_grad()
def predict(model_dir: str | Path, images: list[str | Path]) -> list[dict]:
    """One record per image: ``{"image", "probabilities": {AU: p}, "active": [AU, …]}``."""
    model = load_model(model_dir)
    transform = eval_transform(model.data_cfg)
    records = []
    for path in images:
        pixels = transform(read_image(path)).unsqueeze(0)
        probs = torch.sigmoid(model.net(normalize(pixels)))[0].tolist()
        records.append({
            "image": str(path),
            "probabilities": dict(zip(model.au_names, probs)),
            "active": [au for au, p in zip(model.au_names, probs) if p >= model.threshold],
        })
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clile_core.predict", description=__doc__)
    parser.add_argument("--model", required=True, help="a trained model directory (a run's stage2/ or stage0/)")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        records = predict(args.model, args.images)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    aus = list(records[0]["probabilities"])
    rows = [[r["image"], *(f"{r['probabilities'][au]:.2f}{'*' if au in r['active'] else ''}" for au in aus)] for r in records]
    print(tabulate(rows, headers=["image", *aus]))
    print("* = active (probability >= threshold)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
