"""Two processes x 4 CPU devices over localhost compute what one process with 8 devices computes."""

import sys

import jax
import numpy as np

from ring import make_mesh, sharded_attention
from tests.multiprocess_case import CASE, inputs
from tests.processes import free_port, run_together


def test_two_processes_match_one_process(tmp_path):
    out = tmp_path / "two_process.npz"
    port = free_port()
    run_together([[sys.executable, "-m", "tests.multiprocess_worker", str(port), str(pid), str(out)]
                  for pid in (0, 1)], timeout=240)

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
