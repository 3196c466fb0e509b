"""Tensor parallelism: heads sharded over "tp" inside attention, trained on a dp x tp x sp mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from agent.config import preset
from agent.model import AgenticTransformer
from agent.tokens import STEP_KEYS
from agent.train import OptimConfig, action_loss, init_state, make_train_step, train_step
from ring import make_mesh, sharded_attention
from tests.oracle import attention_and_grads, random_inputs
from tests.test_agent import ACT, _batch

F32_OUT, F32_GRAD = 1e-5, 1e-4


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 2), (4, 1)], ids=["kv-sharded", "kv-picked"])
def test_heads_over_tp_match_float64_oracle(q_heads, kv_heads):
    # 4 query heads over tp=2: K/V heads split with them when they divide (4/2), else every device picks
    # the one K/V head its two query heads share (4/1).
    mesh = make_mesh("dp=2,tp=2,sp=2")
    q, k, v, dout, seg = random_inputs(1, 2, 64, q_heads, kv_heads, 8, segments=True)
    expected = attention_and_grads(q, k, v, dout, causal=True, segment_ids=seg)

    def f(q, k, v):
        return sharded_attention(q, k, v, mesh=mesh, batch_axis="dp", head_axis="tp", segment_ids=seg,
                                 query_chunk_size=8, key_chunk_size=8)

    out, vjp = jax.vjp(jax.jit(f), q, k, v)
    results = (out, *vjp(dout))
    errors = [float(np.max(np.abs(np.asarray(r, np.float64) - e))) for r, e in zip(results, expected)]
    assert errors[0] <= F32_OUT and max(errors[1:]) <= F32_GRAD, errors


def _attention_temp(mesh, head_axis):
    sharding = NamedSharding(mesh, P(None, "sp", head_axis))
    shape = jax.ShapeDtypeStruct((1, 4 * 512, 8, 32), jnp.float32, sharding=sharding)

    def loss(q, k, v):
        return jnp.sum(sharded_attention(q, k, v, mesh=mesh, head_axis=head_axis, query_chunk_size=128,
                                         key_chunk_size=128))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_attention_memory_per_device_falls_with_tp():
    # The same ring of 4 devices, with heads whole and with heads split over two tp devices.
    whole = _attention_temp(make_mesh("sp=4", jax.devices()[:4]), None)
    split = _attention_temp(make_mesh("tp=2,sp=4"), "tp")
    assert split <= 0.6 * whole, (whole, split)
    assert split >= 0.3 * whole, (whole, split)  # the analysis does see the attention's buffers


def test_dp_tp_sp_train_step_equals_one_device_dense():
    batch = _batch(steps=64, batch_size=4)
    config = dict(num_heads=4, num_kv_heads=2, query_chunk_size=8, key_chunk_size=8)
    dense = AgenticTransformer(preset("tiny", attention="reference", **config), action_dim=ACT)
    mesh = make_mesh("dp=2,tp=2,sp=2")
    sharded = AgenticTransformer(preset("tiny", attention="ring", **config), action_dim=ACT, mesh=mesh)
    optim = OptimConfig(warmup_steps=1)
    state = init_state(dense, optim, batch, 0)

    def loss_and_grads(model):
        def loss(params):
            predictions = model.apply({"params": params}, {k: batch[k] for k in STEP_KEYS})
            return action_loss(predictions, batch["actions"], batch["loss_mask"])[0]
        return jax.jit(jax.value_and_grad(loss))(state.params)

    want_loss, want_grads = loss_and_grads(dense)
    new_plain, plain_metrics = jax.jit(lambda s, b: train_step(s, b, model=dense, optim=optim))(state, batch)
    step, placed = make_train_step(sharded, optim, state, mesh)  # parameters over fsdp/tp by the rules
    query = placed.params["transformer"]["layers_0"]["attention"]["query"]["kernel"]
    assert query.sharding.spec == P("fsdp", "tp", None)
    # Loss and gradients of the sharded model, on the placed (tp-sharded) parameters.
    got_loss, got_grads = jax.jit(jax.value_and_grad(
        lambda p: action_loss(sharded.apply({"params": p}, {k: batch[k] for k in STEP_KEYS}),
                              batch["actions"], batch["loss_mask"])[0]))(placed.params)
    assert abs(float(got_loss) - float(want_loss)) <= 1e-5 * abs(float(want_loss))
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-4 * max(np.abs(np.asarray(want)).max(), 1e-6)
    # One optimiser step of the jitted, sharded, donating train step equals the plain one.
    new_sharded, metrics = step(placed, batch)
    assert abs(float(metrics["loss"]) - float(plain_metrics["loss"])) <= 1e-5 * abs(float(plain_metrics["loss"]))
    for got, want in zip(jax.tree.leaves(new_sharded.params), jax.tree.leaves(new_plain.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
