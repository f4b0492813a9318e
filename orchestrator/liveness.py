"""Is the process that wrote a record still running? Identities are ``host:pid:start-time`` so a reused
PID is not mistaken for the original process."""

from __future__ import annotations

import os
import socket

import psutil


def process_identity(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.2f}"


def is_gone(identity: str) -> bool:
    """True when the process is known to have ended. A process on another host cannot be checked from
    here and counts as alive: taking over the work of a live driver is the worse mistake."""
    if not identity:
        return True  # a record from before identities were kept: nobody can be running it now
    host, _, rest = identity.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(pid_text))
        return bool(started) and f"{process.create_time():.2f}" != started
    except (psutil.NoSuchProcess, ValueError):
        return True
    except psutil.AccessDenied:
        return False
