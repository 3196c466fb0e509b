"""Helpers for tests that start several processes: a free localhost port, and running commands together."""

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_together(commands, *, devices: int | None = None, timeout: float = 600) -> list[str]:
    """Starts every command at once from the repository root and waits for all; each must exit 0.

    ``devices``: simulated CPU devices per process (XLA_FLAGS); None leaves the variable unset.
    Returns each process's combined output.
    """
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices is not None:
        env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    workers = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for c in commands]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=timeout)[0])
        finally:
            worker.kill()
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-3000:]
    return logs
