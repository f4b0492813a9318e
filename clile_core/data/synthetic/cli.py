"""``python -m clile_core.data.synthetic``: the command line of the generator (see the package's docstring)."""

from __future__ import annotations

import argparse

from clile_core.data.synthetic.writer import ensure_dataset
from clile_core.datasets import AU_SET_NAMES
from clile_core.log import get_logger

log = get_logger("synthetic")

DESCRIPTION = "Write the built-in synthetic face set (cartoon faces with graded, localised AUs) into a folder."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clile_core.data.synthetic", description=DESCRIPTION)
    parser.add_argument("--out", required=True, help="output folder (images/, manifest.csv, params.json)")
    parser.add_argument("--subjects", type=int, default=18)
    parser.add_argument("--frames-per-subject", type=int, default=80)
    parser.add_argument("--size", type=int, default=112, help="image side in pixels")
    parser.add_argument("--au-set", choices=AU_SET_NAMES, default="bp4d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder the generator did not make")
    args = parser.parse_args(argv)
    try:
        manifest = ensure_dataset(args.out, subjects=args.subjects, frames_per_subject=args.frames_per_subject,
                                  size=args.size, au_set=args.au_set, seed=args.seed, sessions=args.sessions,
                                  force=args.force)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    print(manifest)
    return 0
