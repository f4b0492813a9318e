"""Ends the processes of the driver's own local Ray when the driver dies, ``kill -9`` included.

Ray ties its raylet and GCS to the driver (``PR_SET_PDEATHSIG``), but Ray 2.60's dashboard and runtime-env
agents, children of the raylet, notice their parent's death and then fail to exit: they stay orphaned.
So the driver starts this watchdog in its own session with a pipe to it. The pipe's end in the driver is
close-on-exec (Ray's processes do not inherit it), so the kernel closes it exactly when the driver dies,
however it dies; the watchdog then stops every Ray process it saw descending from the driver.

Run as ``python -m orchestrator.ray_watchdog DRIVER_PID`` with the pipe on standard input.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import psutil

REFRESH_S = 1.0  # how often the list of the driver's descendants is refreshed while the driver lives
GRACE_S = 3.0  # SIGTERM first, SIGKILL what is left after this long


_started: subprocess.Popen | None = None  # held for the driver's lifetime: its stdin is the pipe


def start() -> None:
    """Watch this process (once per process); returns once the watchdog has seen Ray's processes."""
    global _started
    if _started is None or _started.poll() is not None:
        _started = subprocess.Popen([sys.executable, "-m", "orchestrator.ray_watchdog", str(os.getpid())],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    start_new_session=True)  # a Ctrl-C or killpg of the driver's group must not end it first
        _started.stdout.read(1)  # "ready": a driver killed from now on has its Ray stopped


def _descendants(driver: psutil.Process, me: int) -> dict[tuple[int, float], psutil.Process]:
    try:
        found = driver.children(recursive=True)
    except psutil.Error:
        return {}
    procs = {}
    for proc in found:
        try:
            if proc.pid != me and "ray" in proc.name() + " ".join(proc.cmdline()):  # not the driver's other children
                procs[(proc.pid, proc.create_time())] = proc  # the start time guards against a reused pid
        except psutil.Error:
            pass
    return procs


def watch(driver_pid: int) -> None:
    me = psutil.Process().pid
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    seen = _descendants(driver, me)
    sys.stdout.write("r")
    sys.stdout.close()
    while True:
        seen.update(_descendants(driver, me))
        ready, _, _ = select.select([sys.stdin], [], [], REFRESH_S)
        if ready and not sys.stdin.buffer.read1(1):  # EOF: the driver is gone
            break
    alive = [p for p in seen.values() if p.is_running()]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=GRACE_S)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
