"""Two processes x 4 CPU devices over localhost compute what one process with 8 devices computes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from ring import make_mesh, sharded_attention
from tests.multiprocess_case import CASE, inputs

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    out = tmp_path / "two_process.npz"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    workers = [
        subprocess.Popen([sys.executable, "-m", "tests.multiprocess_worker", str(port), str(pid), str(out)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for pid in (0, 1)
    ]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=240)[0])
        finally:
            worker.kill()
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-3000:]

    host = inputs()
    mesh = make_mesh(CASE["mesh"])

    def f(q, k, v):
        return sharded_attention(q, k, v, mesh=mesh, batch_axis="dp", segment_ids=host["seg"],
                                 layout=CASE["layout"], query_chunk_size=4, key_chunk_size=8)

    result, vjp = jax.vjp(jax.jit(f), host["q"], host["k"], host["v"])
    expected = dict(zip(("out", "dq", "dk", "dv"), (result, *vjp(host["dout"]))))
    got = np.load(out)
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], np.asarray(want), rtol=0, atol=1e-6, err_msg=name)
