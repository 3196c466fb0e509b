"""The agent on every context-parallel strategy and with windowed layers (ModelConfig.strategy, window)."""

import jax
import numpy as np
import pytest

from agent.config import preset
from agent.model import AgenticTransformer
from agent.policy import InContextPolicy
from agent.tokens import step_inputs
from agent.train import OptimConfig, init_state
from datasets import ContextSampler, SamplerConfig
from datasets.synthetic import random_trajectories
from ring import make_mesh

OBS, ACT = 5, 2


def _inputs(steps=64):
    trajectories = random_trajectories(0, [16] * 8, obs_dim=OBS, act_dim=ACT)
    sampler = ContextSampler(trajectories, SamplerConfig(num_trajectories=4, max_steps=steps, batch_size=2, prefetch=1))
    raw = sampler.sample_batch(np.random.default_rng(0))
    return {**step_inputs(raw), "loss_mask": raw["loss_mask"]}


def _act_alike(policies, *, num_envs, trials, seed, steps=6):
    """Runs the policies side by side on the same observations and rewards; their actions must agree."""
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        for policy in policies:
            policy.start_trial()
        for _ in range(steps):
            obs = rng.standard_normal((num_envs, OBS)).astype(np.float32)
            actions = [policy.act(obs) for policy in policies]
            np.testing.assert_allclose(actions[0], actions[1], atol=1e-5)
            rewards = rng.random(num_envs).astype(np.float32)
            for policy in policies:
                policy.observe(actions[0], rewards)


def test_every_strategy_computes_the_same_model():
    batch = _inputs()
    mesh = make_mesh("sp=-1")
    cfg = preset("tiny", attention="ring", num_heads=8, num_kv_heads=8, embed_dim=64, query_chunk_size=8,
                 key_chunk_size=8, ffn_chunk_size=8)
    params = init_state(AgenticTransformer(cfg, action_dim=ACT, mesh=mesh), OptimConfig(), batch, 0).params
    inputs = {k: v for k, v in batch.items() if k not in ("loss_mask", "labels")}
    out = {s: np.asarray(AgenticTransformer(cfg.__class__(**{**cfg.__dict__, "strategy": s}), action_dim=ACT,
                                            mesh=mesh).apply({"params": params}, inputs)["action"])
           for s in ("ring", "allgather", "ulysses")}  # "auto" picks one of these (tests/test_ring_strategies.py)
    for strategy in ("allgather", "ulysses"):
        np.testing.assert_allclose(out[strategy], out["ring"], atol=2e-5, err_msg=strategy)


def test_windowed_layers_read_only_their_window_and_decode_as_recomputed():
    batch = _inputs()
    inputs = {k: v for k, v in batch.items() if k not in ("loss_mask", "labels")}
    full = preset("tiny", attention="reference")
    windowed = preset("tiny", attention="reference", window=8, windowed_layers=(0,))
    params = init_state(AgenticTransformer(full, action_dim=ACT), OptimConfig(), batch, 0).params
    a = np.asarray(AgenticTransformer(full, action_dim=ACT).apply({"params": params}, inputs)["action"])
    b = np.asarray(AgenticTransformer(windowed, action_dim=ACT).apply({"params": params}, inputs)["action"])
    np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-6)  # within the window nothing differs
    assert np.abs(a[:, 8:] - b[:, 8:]).max() > 1e-4
    blockwise = preset("tiny", attention="blockwise", window=8, windowed_layers=(0,), query_chunk_size=16,
                       key_chunk_size=16)
    c = np.asarray(AgenticTransformer(blockwise, action_dim=ACT).apply({"params": params}, inputs)["action"])
    np.testing.assert_allclose(b, c, atol=2e-5)
    model = AgenticTransformer(windowed, action_dim=ACT)
    policies = [InContextPolicy(model, params, num_envs=2, obs_dim=OBS, episode_length=6, num_trials=3,
                                target_return=2.0, recompute=r) for r in (True, False)]
    cached = policies[1].cache  # the windowed layer keeps its window and one call's tokens, not the context
    assert cached[0][0].shape[1] == 8 + windowed.tokens_per_step - 1 < cached[1][0].shape[1]
    _act_alike(policies, num_envs=2, trials=3, seed=1)


def test_scanned_windowed_layers_decode_from_a_cache_sharded_over_its_slots():
    # Scanned layers stack their caches [layers, batch, slots, ...]: the slots, not the batch, are split over
    # "sp" (3 environments do not divide by 4 devices); decoding equals recomputation.
    batch = _inputs()
    cfg = preset("tiny", attention="ring", window=8, windowed_layers=(0, 1), scan_layers=True, query_chunk_size=8,
                 key_chunk_size=8, ffn_chunk_size=8)
    mesh = make_mesh("sp=4", jax.devices()[:4])
    model = AgenticTransformer(cfg, action_dim=ACT, mesh=mesh)
    params = init_state(model, OptimConfig(), batch, 0).params
    policies = [InContextPolicy(model, params, num_envs=3, obs_dim=OBS, episode_length=6, num_trials=2,
                                target_return=2.0, recompute=r) for r in (True, False)]
    slots = -(-(8 + cfg.tokens_per_step - 1) // 4) * 4  # the window and one call's tokens, a multiple of 4
    assert policies[1].cache[0].shape[:3] == (2, 3, slots)
    _act_alike(policies, num_envs=3, trials=2, seed=2)


def test_window_settings_are_checked():
    with pytest.raises(ValueError, match="go together"):
        preset("tiny", window=8)
    with pytest.raises(ValueError, match="do not exist"):
        preset("tiny", window=8, windowed_layers=(5,))
    with pytest.raises(ValueError, match="scan_layers"):
        preset("tiny", window=8, windowed_layers=(0,), scan_layers=True)
    with pytest.raises(ValueError, match="strategy"):
        preset("tiny", strategy="tree")
    assert preset("tiny", window=8, windowed_layers=[1]).layer_windows == (None, 8)
