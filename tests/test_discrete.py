"""Discrete actions end to end: stored and read as integers by every format, sampled, embedded one-hot,
predicted by the categorical head, decoded with the KV cache exactly as recomputed, and overfitted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
from agent.config import preset
from agent.heads import check_temperature, per_step_loss, sample_actions
from agent.model import AgenticTransformer
from agent.policy import InContextPolicy, UniformRandomPolicy
from agent.tokens import step_inputs
from agent.train import OptimConfig, init_state, train_step
from datasets import ContextSampler, SamplerConfig

NUM_ACTIONS = 5


def _episodes(n=8, length=10, seed=0, histories=2):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        observations = rng.integers(0, 9, (length + 1, 2)).astype(np.float32)
        last = np.arange(length) == length - 1
        out.append(datasets.Trajectory(observations=observations[:-1], actions=rng.integers(0, NUM_ACTIONS, length),
                                       rewards=rng.integers(0, 2, length).astype(np.float32),
                                       terminals=np.zeros(length, bool), timeouts=last,
                                       final_observation=observations[-1], physics=observations[:-1].astype(float),
                                       final_physics=observations[-1].astype(float), task=np.array([1.0, 2.0]),
                                       history=i * histories // n, source=f"episode {i}"))
    return out


def test_trajectory_keeps_integer_actions_and_refuses_bad_ones():
    episode = _episodes(1)[0]
    assert episode.discrete and episode.actions.dtype == np.int32 and episode.action_dim == 1
    with pytest.raises(ValueError, match="actions"):
        episode.replace(actions=-np.ones(len(episode), np.int64))
    with pytest.raises(ValueError, match="actions"):  # a float vector per step is two-dimensional
        episode.replace(actions=np.zeros(len(episode), np.float32))


@pytest.mark.parametrize("fmt", ["exorl", "d4rl", "minari"])
def test_every_format_round_trips_integer_actions(tmp_path, fmt):
    episodes = _episodes()
    if fmt == "exorl":
        datasets.exorl.save(tmp_path, "dark_room", "searcher", episodes)
        back = datasets.read_episodes(tmp_path, format="exorl", domain="dark_room", algo="searcher")
    elif fmt == "d4rl":
        datasets.d4rl.save(tmp_path / "grid.hdf5", episodes)
        back = datasets.read_episodes(tmp_path / "grid.hdf5", format="d4rl")
    else:
        with pytest.raises(ValueError, match="num_actions"):
            datasets.minari.save("grid/dark_room/searcher-v0", episodes, root=tmp_path)
        datasets.minari.save("grid/dark_room/searcher-v0", episodes, root=tmp_path, num_actions=NUM_ACTIONS)
        back = datasets.minari.load("grid/dark_room/searcher-v0", reader="hdf5", root=tmp_path)
        import json

        metadata = json.loads((tmp_path / "grid/dark_room/searcher-v0/data/metadata.json").read_text())
        assert json.loads(metadata["action_space"]) == {"type": "Discrete", "dtype": "int64", "start": 0, "n": 5}
    assert len(back) == len(episodes)
    for a, b in zip(episodes, back):
        assert b.discrete and b.actions.dtype == np.int32
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)


def test_minari_package_reads_the_discrete_space(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    datasets.minari.save("grid/dark_room/searcher-v0", _episodes(), root=tmp_path, num_actions=NUM_ACTIONS)
    dataset = minari.load_dataset("grid/dark_room/searcher-v0", download=False)
    assert dataset.action_space.n == NUM_ACTIONS
    back = datasets.minari.load("grid/dark_room/searcher-v0", reader="minari")
    np.testing.assert_array_equal(back[0].actions, _episodes()[0].actions)


def test_sampler_and_step_inputs_for_discrete_actions():
    episodes = _episodes(n=8, histories=2)
    sampler = ContextSampler(episodes, SamplerConfig(num_trajectories=3, max_steps=30, batch_size=4, prefetch=1,
                                                     group_by="history", order="history"))
    batch = sampler.sample_batch(np.random.default_rng(0))
    assert batch["actions"].dtype == np.int32 and batch["actions"].shape == (4, 30)
    chain = sampler.chain(np.random.default_rng(3))
    assert chain == list(range(chain[0], chain[0] + 3))  # consecutive episodes of one history, in played order
    assert len({episodes[i].history for i in chain}) == 1
    inputs = step_inputs(batch)
    assert inputs["actions"].dtype == np.int32
    starts = batch["timesteps"] == 0
    np.testing.assert_array_equal(inputs["prev_actions"][starts], -1)
    following = ~starts[:, 1:]
    np.testing.assert_array_equal(inputs["prev_actions"][:, 1:][following], batch["actions"][:, :-1][following])
    with pytest.raises(ValueError, match="group_by"):
        SamplerConfig(order="history")


def test_categorical_head_loss_and_sampling():
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]))
    predictions = {"action": jnp.argmax(logits, -1), "logits": logits}
    np.testing.assert_allclose(per_step_loss(predictions, jnp.array([2, 1])), -np.log([0.7, 0.25]), rtol=1e-6)
    draws = jax.vmap(lambda k: sample_actions(predictions, k))(jax.random.split(jax.random.key(0), 4000))
    frequency = np.bincount(np.asarray(draws[:, 0]), minlength=3) / 4000
    np.testing.assert_allclose(frequency, [0.1, 0.2, 0.7], atol=0.03)
    assert draws.dtype == jnp.int32
    floor = UniformRandomPolicy(6, 1, seed=0, num_actions=NUM_ACTIONS).act(None)
    assert floor.dtype == np.int32 and floor.min() >= 0 and floor.max() < NUM_ACTIONS


def test_sampling_temperature_tempers_the_categorical_head():
    # Temperature T draws from softmax(logits / T): p^(1/T), renormalised. T = 0.5 squares the probabilities.
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.7]]))
    predictions = {"action": jnp.argmax(logits, -1), "logits": logits}
    keys = jax.random.split(jax.random.key(1), 4000)
    for temperature, expected in ((0.5, np.array([0.01, 0.04, 0.49]) / 0.54), (2.0, np.sqrt([0.1, 0.2, 0.7]))):
        draws = jax.vmap(lambda k, t=temperature: sample_actions(predictions, k, temperature=t))(keys)
        frequency = np.bincount(np.asarray(draws[:, 0]), minlength=3) / 4000
        np.testing.assert_allclose(frequency, expected / expected.sum(), atol=0.03)
    same = jax.vmap(lambda k: sample_actions(predictions, k, temperature=1.0))(keys[:50])
    np.testing.assert_array_equal(same, jax.vmap(lambda k: sample_actions(predictions, k))(keys[:50]))
    for bad, head, match in ((0.0, "categorical", "positive"), (0.5, "gaussian", "categorical action head only")):
        with pytest.raises(ValueError, match=match):
            check_temperature(bad, head)
    from experiments.config import EvalConfig, ExperimentConfig

    with pytest.raises(ValueError, match="EvalConfig.temperature"):
        EvalConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="eval.temperature=0.5 applies to the categorical action head only"):
        ExperimentConfig(eval=EvalConfig(temperature=0.5))


def _batch():
    sampler = ContextSampler(_episodes(), SamplerConfig(num_trajectories=2, max_steps=32, batch_size=2, prefetch=1))
    raw = sampler.sample_batch(np.random.default_rng(0))
    return {**step_inputs(raw), "loss_mask": raw["loss_mask"]}


@pytest.mark.parametrize("layout", ["fused", "interleaved"])
def test_kv_cached_decoding_equals_recompute_with_integer_actions(layout):
    model = AgenticTransformer(preset("tiny", token_layout=layout, attention="reference", action_head="categorical"),
                               action_dim=NUM_ACTIONS)
    params = init_state(model, OptimConfig(), _batch(), 0).params
    policies = [InContextPolicy(model, params, num_envs=3, obs_dim=2, episode_length=5, num_trials=2, target_return=2.0,
                                recompute=r, sample=True, seed=4) for r in (True, False)]
    rng = np.random.default_rng(1)
    for _ in range(2):
        for policy in policies:
            policy.start_trial()
        for _ in range(5):
            obs = rng.integers(0, 9, (3, 2)).astype(np.float32)
            actions = [policy.act(obs) for policy in policies]
            assert actions[0].dtype == np.int32 and actions[0].shape == (3,)
            np.testing.assert_array_equal(actions[0], actions[1])
            rewards = rng.integers(0, 2, 3).astype(np.float32)
            for policy in policies:
                policy.observe(actions[0], rewards)


def test_categorical_model_overfits_a_tiny_batch():
    batch = _batch()
    model = AgenticTransformer(preset("tiny", attention="reference", action_head="categorical"), action_dim=NUM_ACTIONS)
    optim = OptimConfig(learning_rate=3e-3, warmup_steps=10, total_steps=300, clip_norm=1.0, weight_decay=0.0)
    state = init_state(model, optim, batch, 0)
    step = jax.jit(lambda s, b: train_step(s, b, model=model, optim=optim))
    first = None
    for _ in range(300):
        state, metrics = step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert first == pytest.approx(np.log(NUM_ACTIONS), abs=0.3)
    assert float(metrics["loss"]) <= 0.05, (first, float(metrics["loss"]))


@pytest.mark.parametrize("name", ["dark_room_hidden", "dark_key_to_door_hidden"])
def test_optimal_labels_are_the_oracle_and_reach_the_loss(name):
    from experiments.collection.grid_sources import play_grid_histories

    oracle = play_grid_histories(name, "oracle", [0, 1], 2, seed=0)
    for episode in (e for history in oracle for e in history):
        np.testing.assert_array_equal(episode.with_optimal_labels(name).labels, episode.actions)
    noisy = [e.with_optimal_labels(name) for history in play_grid_histories(name, "random", [0, 1], 3, seed=0)
             for e in history]
    assert all((e.labels != e.actions).any() for e in noisy)
    sampler = ContextSampler(noisy, SamplerConfig(num_trajectories=2, max_steps=40, batch_size=2, prefetch=1,
                                                  group_by="history", order="history"))
    raw = sampler.sample_batch(np.random.default_rng(0))
    inputs = step_inputs(raw)
    assert (inputs["labels"] != inputs["actions"])[raw["mask"]].any()
    model = AgenticTransformer(preset("tiny", attention="reference", action_head="categorical"), action_dim=NUM_ACTIONS)
    batch = {**inputs, "loss_mask": raw["loss_mask"]}
    state = init_state(model, OptimConfig(), batch, 0)
    step = jax.jit(lambda s, b: train_step(s, b, model=model, optim=OptimConfig())[1]["loss"])
    by_labels, by_actions = step(state, batch), step(state, {**batch, "labels": batch["actions"]})
    assert float(by_labels) != float(by_actions)
    with pytest.raises(ValueError, match="grid"):
        noisy[0].with_optimal_labels("point_nav_hidden")
