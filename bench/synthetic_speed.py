"""Images per second written by the synthetic face generator (one process, one core).

    python bench/synthetic_speed.py [--images 300] [--size 112]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

from clile_core.data.synthetic import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    subjects = 6
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        generate(tmp, subjects=subjects, frames_per_subject=max(1, args.images // subjects), size=args.size)
        elapsed = time.perf_counter() - start
    n = subjects * max(1, args.images // subjects)
    print(f"{n} images at {args.size} px in {elapsed:.2f} s: {n / elapsed:.0f} images/s")


if __name__ == "__main__":
    main()
