"""Training: the loss, the optimiser, one pytree of state, and a pure sharded train step."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from agent.config import OptimConfig
from agent.heads import per_step_loss
from agent.model import AgenticTransformer
from agent.sharding import param_shardings, place
from agent.tokens import STEP_KEYS

__all__ = ["OptimConfig", "TrainState", "action_loss", "batch_shardings", "init_state",
           "make_train_step", "state_shardings", "train_step"]

BATCH_KEYS = STEP_KEYS + ("loss_mask", "labels")  # labels: what the loss predicts (``agent.tokens``)


class TrainState(flax.struct.PyTreeNode):
    """All mutable training state: parameters, optimiser state, step, and the RNG key."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def action_loss(predictions: dict, actions, loss_mask):
    """Mean over loss-masked steps of the head's per-step loss (``agent.heads.per_step_loss``: squared error
    for the tanh head, negative log-likelihood for the gaussian and mixture heads).

    Returns:
      (loss, number of loss-carrying steps).
    """
    weights = loss_mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(per_step_loss(predictions, actions) * weights) / count, count


def init_state(model: AgenticTransformer, optim: OptimConfig, example: dict, seed: int) -> TrainState:
    """Fresh parameters and optimiser state from ``seed`` (an example batch fixes the shapes).

    Compiled as one program: run eagerly, every primitive of the ring's shard_map and of remat would be
    compiled on its own (hundreds of small compilations, most of a tiny run's time on a CPU).
    """

    def init(key, inputs):
        init_key, key = jax.random.split(key)
        params = model.init({"params": init_key}, inputs)["params"]
        return TrainState(params=params, opt_state=optim.optimizer().init(params), step=jnp.zeros((), jnp.int32),
                          key=key)

    return jax.jit(init)(jax.random.key(seed), {k: example[k] for k in STEP_KEYS})


def train_step(state: TrainState, batch: dict, *, model: AgenticTransformer, optim: OptimConfig):
    """One optimiser update. Pure: ``(state, batch) -> (state, metrics)``.

    Randomness (dropout) comes from ``fold_in(state.key, state.step)``. The loss predicts ``batch["labels"]``:
    the actions taken, or (DPT) the task's optimal actions, while the context always shows the taken ones.
    """
    dropout_key = jax.random.fold_in(state.key, state.step)
    inputs = {k: batch[k] for k in STEP_KEYS}

    def loss_fn(params):
        predictions = model.apply({"params": params}, inputs, train=True, rngs={"dropout": dropout_key})
        return action_loss(predictions, batch["labels"], batch["loss_mask"])

    (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optim.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": optim.schedule()(state.step),
               "tokens": jnp.asarray(batch["observations"].shape[0] * batch["observations"].shape[1]
                                     * model.config.tokens_per_step, jnp.float32),
               "loss_steps": count}
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def batch_shardings(mesh, batch_axes=("dp", "fsdp"), sequence_axis: str | None = "sp") -> dict:
    """Batch arrays: batch over ``batch_axes``, steps (the sequence) over ``sequence_axis`` (the ring; None
    for a model without one, whose sequence stays whole on every device)."""
    axes = tuple(a for a in batch_axes if a in mesh.shape)
    return {k: NamedSharding(mesh, P(axes, sequence_axis)) for k in BATCH_KEYS}


def state_shardings(state: TrainState, optim: OptimConfig, mesh) -> TrainState:
    """Shardings of every leaf of the state: parameters and their optimiser moments by the rules table,
    everything else (step, key, optimiser counts) replicated."""
    replicated = NamedSharding(mesh, P())
    params = param_shardings(state.params, mesh)
    opt = optax.tree_map_params(optim.optimizer(), lambda _, sharding: sharding, state.opt_state, params,
                                transform_non_params=lambda _: replicated)
    return TrainState(params=params, opt_state=opt, step=replicated, key=replicated)


def make_train_step(model: AgenticTransformer, optim: OptimConfig, state: TrainState, mesh):
    """``train_step`` jitted once with explicit shardings and the state donated.

    Returns:
      (jitted step, the state placed on its shardings). The placed state may share buffers with
      ``state``, and the step donates its input: keep using only the returned states.
    """
    shardings = state_shardings(state, optim, mesh)
    batch_sh = batch_shardings(mesh, model.batch_axes, model.sequence_axis)
    step = jax.jit(functools.partial(train_step, model=model, optim=optim),
                   in_shardings=(shardings, batch_sh), out_shardings=(shardings, None), donate_argnums=(0,))
    return step, place(state, shardings)
