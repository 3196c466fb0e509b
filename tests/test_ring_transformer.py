"""The transformer stack: injected attention kinds agree, blockwise FFN equals the plain one, scan = unroll."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ring import blockwise_feedforward, make_mesh
from ring.transformer import Transformer, make_attention


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def test_blockwise_feedforward_matches_plain():
    w1 = jax.random.normal(jax.random.key(0), (8, 32))
    w2 = jax.random.normal(jax.random.key(1), (32, 8))
    x = jax.random.normal(jax.random.key(2), (2, 48, 8))

    def mlp(w1, w2, x):
        return jax.nn.gelu(x @ w1) @ w2

    def loss(fn):
        return lambda w1, w2, x: jnp.sum(jnp.sin(fn(w1, w2, x)))

    plain = jax.grad(loss(mlp), argnums=(0, 1, 2))(w1, w2, x)
    for remat in (True, False):
        def chunked_mlp(w1, w2, x):
            return blockwise_feedforward(lambda c: mlp(w1, w2, c), x, 16, remat=remat)

        assert _rel_err(chunked_mlp(w1, w2, x), mlp(w1, w2, x)) <= 1e-6
        chunked = jax.grad(loss(chunked_mlp), argnums=(0, 1, 2))(w1, w2, x)
        for got, want in zip(chunked, plain):
            assert _rel_err(got, want) <= 1e-5
    ragged = blockwise_feedforward(lambda c: mlp(w1, w2, c), x, 10)  # 4 chunks of 10 and one of 8
    assert _rel_err(ragged, mlp(w1, w2, x)) <= 1e-6
    with pytest.raises(ValueError, match="chunk_size=0 must be positive"):
        blockwise_feedforward(lambda c: c, x, 0)


def test_blockwise_feedforward_per_device_blocks_on_a_sharded_sequence():
    # With seq_shards the loop takes one chunk of every device's block per step: same values and gradients,
    # and XLA keeps every device on its own tokens (no buffer of the whole sequence on one device).
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = make_mesh("sp=-1")
    w1, w2 = jax.random.normal(jax.random.key(0), (8, 32)), jax.random.normal(jax.random.key(1), (32, 8))
    x = jax.device_put(jax.random.normal(jax.random.key(2), (1, 8 * 256, 8)), NamedSharding(mesh, P(None, "sp")))

    def loss(shards):
        return lambda w1, w2, x: jnp.sum(jnp.sin(blockwise_feedforward(
            lambda c: jax.nn.gelu(c @ w1) @ w2, x, 48, seq_shards=shards)))  # 48 -> 32, a divisor of 256

    plain = jax.grad(loss(1), argnums=(0, 1, 2))(w1, w2, x)
    program = jax.jit(jax.grad(loss(8), argnums=(0, 1, 2)))
    for got, want in zip(program(w1, w2, x), plain):
        assert _rel_err(got, want) <= 1e-5
    hlo = program.lower(w1, w2, x).compile().as_text()
    assert "f32[1,2048," not in hlo and "f32[2048," not in hlo  # nothing sequence-long on a device
    with pytest.raises(ValueError, match="seq_shards=3 must divide the sequence length 2048"):
        blockwise_feedforward(lambda c: c, x, 16, seq_shards=3)


def _model(kind, scan_layers=False, remat_policy="nothing_saveable", mesh=None):
    attention = make_attention(kind, mesh=mesh, query_chunk_size=8, key_chunk_size=4)
    return Transformer(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, attention_fn=attention,
                       ffn_chunk_size=16, activation="relu", remat_policy=remat_policy, scan_layers=scan_layers)


def _inputs():
    x = jax.random.normal(jax.random.key(0), (2, 64, 32))
    segments = jnp.asarray(np.repeat([[0] * 40 + [1] * 24], 2, axis=0), jnp.int32)
    return x, segments


def _value_and_grad(model, params, x, segments):
    # A fixed random readout: the mean square of a LayerNorm output would be constant and its gradient noise.
    readout = jax.random.normal(jax.random.key(42), x.shape)

    def loss(params):
        return jnp.mean(model.apply(params, x, segments) * readout)

    return jax.jit(jax.value_and_grad(loss))(params)


def test_attention_kinds_agree_on_outputs_and_gradients():
    x, segments = _inputs()
    mesh = make_mesh("dp=2,sp=4")
    params = _model("reference").init(jax.random.key(1), x, segments)
    want_loss, want_grads = _value_and_grad(_model("reference"), params, x, segments)
    for kind in ("blockwise", "ring"):
        loss, grads = _value_and_grad(_model(kind, mesh=mesh), params, x, segments)
        assert _rel_err(loss, want_loss) <= 1e-5, kind
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
            assert _rel_err(got, want) <= 1e-4, kind


def test_scan_layers_and_remat_policies_match_unrolled():
    x, segments = _inputs()
    unrolled = _model("blockwise", remat_policy="none")
    params = unrolled.init(jax.random.key(3), x, segments)
    want_loss, want_grads = _value_and_grad(unrolled, params, x, segments)

    for policy in ("nothing_saveable", "dots_saveable"):
        loss, grads = _value_and_grad(_model("blockwise", remat_policy=policy), params, x, segments)
        assert _rel_err(loss, want_loss) <= 1e-6
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
            assert _rel_err(got, want) <= 1e-5

    p = params["params"]
    stacked = {"params": {"final_norm": p["final_norm"],
                          "layers": jax.tree.map(lambda *xs: jnp.stack(xs), p["layers_0"], p["layers_1"])}}
    scanned = _model("blockwise", scan_layers=True)
    assert jax.tree.structure(scanned.init(jax.random.key(3), x, segments)) == jax.tree.structure(stacked)
    loss, grads = _value_and_grad(scanned, stacked, x, segments)
    assert _rel_err(loss, want_loss) <= 1e-6
    assert _rel_err(grads["params"]["layers"]["mlp"]["wi"][1], want_grads["params"]["layers_1"]["mlp"]["wi"]) <= 1e-5


def test_bad_configuration_errors():
    x, _ = _inputs()
    with pytest.raises(ValueError, match="attention kind='flash' is unknown"):
        make_attention("flash")
    with pytest.raises(ValueError, match="needs mesh="):
        make_attention("ring")
    model = Transformer(1, 4, 2, 8, 64, make_attention("reference"), remat_policy="sometimes")
    with pytest.raises(ValueError, match="remat_policy='sometimes' is unknown"):
        model.init(jax.random.key(0), x)
