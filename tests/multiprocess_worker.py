"""One of two processes (4 CPU devices each) running sharded attention as one 8-device job.

Run by tests/test_ring_multiprocess.py as ``python -m tests.multiprocess_worker PORT PROCESS_ID OUT``.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from ring import make_mesh, sharded_attention  # noqa: E402
from tests.multiprocess_case import CASE, inputs  # noqa: E402


def main(port: int, process_id: int, out: str) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = make_mesh(CASE["mesh"])
    host = inputs()
    spec = {"q": P("dp", "sp"), "k": P("dp", "sp"), "v": P("dp", "sp"), "dout": P("dp", "sp"), "seg": P("dp", "sp")}
    # Every process feeds only its addressable shards.
    arrays = {name: jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec[name]), lambda idx, x=x: x[idx])
              for name, x in host.items()}

    def f(q, k, v, seg):
        return sharded_attention(q, k, v, mesh=mesh, batch_axis="dp", segment_ids=seg,
                                 layout=CASE["layout"], query_chunk_size=4, key_chunk_size=8)

    out_arr, vjp = jax.vjp(lambda q, k, v: jax.jit(f)(q, k, v, arrays["seg"]), arrays["q"], arrays["k"], arrays["v"])
    results = (out_arr, *vjp(arrays["dout"]))
    gathered = [np.asarray(multihost_utils.process_allgather(r, tiled=True)) for r in results]
    if process_id == 0:
        np.savez(out, out=gathered[0], dq=gathered[1], dk=gathered[2], dv=gathered[3])
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
