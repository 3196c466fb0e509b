"""How parameters are laid out over the mesh: one ordered table of rules, first match wins.

Large matrices shard their input dimension over "fsdp" and their heads / hidden units over "tp"; small
vectors (norms, biases) and the embeddings of scalar inputs are replicated. Attention computes on the
same split: ring attention takes its query and K/V heads sharded over "tp" (``head_axis``), so each tp
device projects, attends and outputs only its own heads. K/V projections need ``num_kv_heads`` divisible
by the tp size. A parameter that no rule matches is an error, so a new layer cannot silently end up
replicated. Scanned layers carry a leading layer axis, which stays unsharded.
"""

from __future__ import annotations

import re

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

RULES: tuple[tuple[str, P], ...] = (
    (r"attention/(query|key|value)/kernel$", P("fsdp", "tp", None)),  # [embed, heads, head_dim]
    (r"attention/out/kernel$", P("tp", None, "fsdp")),                # [heads, head_dim, embed]
    (r"mlp/wi$", P("fsdp", "tp")),                                    # [embed, hidden]
    (r"mlp/wo$", P("tp", "fsdp")),                                    # [hidden, embed]
    (r"mlp/bi$", P("tp")),
    (r"mlp/bo$", P()),
    (r"_norm/(scale|bias)$", P()),
    (r"(timestep|trajectory)_embed/embedding$", P(None, "fsdp")),     # [table, embed]
    (r"completion_embed/embedding$", P()),
    (r"_embed/kernel$", P(None, "fsdp")),                             # [input, embed]
    (r"_embed/bias$", P()),
    (r"(action|log_std|mixture_logits)_head/kernel$", P("fsdp", None)),  # [embed, action (x components)]
    (r"(action|log_std|mixture_logits)_head/bias$", P()),
)


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def spec_for(name: str, shape: tuple[int, ...], mesh_shape: dict) -> P:
    """The PartitionSpec of parameter ``name`` (a "/"-joined path) with ``shape``.

    Raises:
      ValueError: no rule matches, or a sharded dimension does not divide by its mesh axes.
    """
    for pattern, spec in RULES:
        if re.search(pattern, name):
            break
    else:
        raise ValueError(f"parameter {name!r} {shape} matches no sharding rule in agent.sharding.RULES")
    spec = tuple(spec)
    if len(shape) == len(spec) + 1 and name.startswith("transformer/layers/"):
        spec = (None,) + spec  # the scanned-layer axis
    if len(spec) > len(shape):
        raise ValueError(f"sharding rule {spec} for {name!r} has more dimensions than its shape {shape}")
    for dim, axes in zip(shape, spec):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        size = 1
        for axis in names:
            size *= mesh_shape.get(axis, 1)
        if dim % size:
            raise ValueError(f"parameter {name!r} dimension {dim} of {shape} does not divide over mesh axes "
                             f"{names} ({size} devices)")
    return P(*spec)


def param_shardings(params, mesh):
    """NamedShardings for a parameter tree, by :data:`RULES`."""
    mesh_shape = dict(mesh.shape)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, spec_for(_path_name(path), x.shape, mesh_shape)), params)


def place(tree, shardings):
    """``jax.device_put(tree, shardings)`` that also works across processes: there, every process holds the
    same host values and hands over only the shards of its own devices. ``shardings``: one sharding or a
    tree of them matching ``tree``."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    import numpy as np

    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(place, tree, shardings)

    def put(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):  # typed keys travel as their data
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, shardings, lambda index: host[index])

    return jax.tree.map(put, tree)
