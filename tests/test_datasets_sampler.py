"""Chain-of-hindsight context sampler: ordering, targets, returns-to-go, windows, masks, grouping by task."""

import threading

import numpy as np
import pytest

from datasets import ContextSampler, Prefetcher, SamplerConfig, Trajectory, top_fraction
from datasets.synthetic import random_trajectories


def _episode(rewards, ident):
    length = len(rewards)
    observations = np.zeros((length, 2), np.float32)
    observations[:, 0] = ident
    observations[:, 1] = np.arange(length)
    timeouts = np.zeros(length, bool)
    timeouts[-1] = True
    return Trajectory(observations, np.full((length, 1), ident, np.float32), np.asarray(rewards, np.float32),
                      np.zeros(length, bool), timeouts)


A = _episode([1, 1, 1], ident=0)  # return 3
B = _episode([2, 2, 0, 0], ident=1)  # return 4, reaches it at step 1


def _one(config, pool=(B, A), seed=0):
    return ContextSampler(list(pool), config).sample_batch(np.random.default_rng(seed))


def test_hand_computed_chain_with_padding():
    batch = _one(SamplerConfig(num_trajectories=2, max_steps=10, batch_size=3))
    for row in range(3):  # every row holds the same two episodes: A (worse) then B
        np.testing.assert_array_equal(batch["observations"][row, :, 0], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(batch["timesteps"][row], [0, 1, 2, 0, 1, 2, 3, 0, 0, 0])
        np.testing.assert_array_equal(batch["trajectory_index"][row], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(batch["returns_to_go"][row], [4, 3, 2, 4, 2, 0, 0, 0, 0, 0])
        np.testing.assert_array_equal(batch["rewards"][row], [1, 1, 1, 2, 2, 0, 0, 0, 0, 0])
        np.testing.assert_array_equal(batch["mask"][row], [1] * 7 + [0] * 3)
        np.testing.assert_array_equal(batch["loss_mask"][row], batch["mask"][row])
    np.testing.assert_array_equal(batch["target_return"], [4, 4, 4])
    np.testing.assert_array_equal(batch["num_trajectories"], [2, 2, 2])


def test_end_window_keeps_the_best_episode_whole():
    batch = _one(SamplerConfig(num_trajectories=2, max_steps=5, batch_size=1))
    np.testing.assert_array_equal(batch["timesteps"][0], [2, 0, 1, 2, 3])
    np.testing.assert_array_equal(batch["returns_to_go"][0], [2, 4, 2, 0, 0])
    assert batch["mask"].all() and batch["num_trajectories"][0] == 2
    batch = _one(SamplerConfig(num_trajectories=2, max_steps=4, batch_size=1))
    np.testing.assert_array_equal(batch["trajectory_index"][0], [1, 1, 1, 1])
    assert batch["num_trajectories"][0] == 1


def test_loss_on_last_episode_only():
    batch = _one(SamplerConfig(num_trajectories=2, max_steps=10, batch_size=1, loss_on="last"))
    np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])


def _check_batch(batch, pool, k, window):
    """Every row against the episodes it was cut from (observations[:, 0] names the episode)."""
    returns = {i: t.total_return for i, t in enumerate(pool)}
    for row in range(batch["mask"].shape[0]):
        valid = batch["mask"][row]
        ids = batch["observations"][row, valid, 0].astype(int)
        steps = batch["timesteps"][row, valid]
        positions = batch["trajectory_index"][row, valid]
        chain_ids = [ids[positions == p][0] for p in np.unique(positions)]
        assert np.all(np.diff(positions) >= 0) and len(set(chain_ids)) == len(chain_ids)
        assert [returns[i] for i in chain_ids] == sorted(returns[i] for i in chain_ids)
        assert batch["num_trajectories"][row] == len(chain_ids)
        target = float(batch["target_return"][row])
        assert target in {np.float32(r) for r in returns.values()}
        if window == "end":  # the best episode is always in the window
            assert positions.max() == k - 1 and target == np.float32(returns[chain_ids[-1]])
            target = returns[chain_ids[-1]]
        else:
            assert target >= np.float32(returns[chain_ids[-1]])
            target = next(r for r in returns.values() if np.float32(r) == target)
        for i, t, rtg, reward in zip(ids, steps, batch["returns_to_go"][row, valid], batch["rewards"][row, valid]):
            episode = pool[i]
            assert reward == episode.rewards[t]
            np.testing.assert_allclose(rtg, target - episode.rewards[:t].sum(dtype=np.float64),
                                       rtol=1e-5, atol=1e-4)
        assert not batch["observations"][row, ~valid].any() and not batch["returns_to_go"][row, ~valid].any()


def _pool(n=10, seed=3):
    pool = random_trajectories(seed, np.random.default_rng(seed).integers(5, 30, n), obs_dim=4, act_dim=2,
                               state_dim=None)
    return [t.replace(observations=np.concatenate([np.full((len(t), 1), i, np.float32), t.observations[:, 1:]], 1))
            for i, t in enumerate(pool)]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("window", ["end", "random"])
def test_random_pools_shapes_and_invariants(k, window):
    pool = _pool()
    config = SamplerConfig(num_trajectories=k, max_steps=60, batch_size=6, window=window)
    sampler = ContextSampler(pool, config)
    batch = sampler.sample_batch(np.random.default_rng(k))
    assert {key: (v.shape, v.dtype) for key, v in batch.items()} == sampler.spec()
    assert batch["observations"].shape == (6, 60, 4) and batch["actions"].shape == (6, 60, 2)
    _check_batch(batch, pool, k, window)
    full = batch["mask"].all(axis=1)
    totals = batch["mask"].sum(axis=1)
    assert (full | (totals < 60)).all()


def test_uniform_k_draws_every_chain_length_up_to_k():
    pool = _pool()
    config = SamplerConfig(num_trajectories=4, max_steps=200, batch_size=64, k_sampling="uniform")
    batch = ContextSampler(pool, config).sample_batch(np.random.default_rng(1))
    # 200 steps hold any 4 episodes of at most 29 steps whole: every row's chain is all in the window.
    lengths = batch["trajectory_index"].max(axis=1, where=batch["mask"], initial=0) + 1
    np.testing.assert_array_equal(lengths, batch["num_trajectories"])
    assert set(lengths.tolist()) == {1, 2, 3, 4}
    for row in range(64):  # each row is a valid chain of its own length
        _check_batch({key: value[row:row + 1] for key, value in batch.items()}, pool, int(lengths[row]), "end")


def test_random_window_moves_and_dt_contexts():
    pool = _pool(n=3)
    config = SamplerConfig(num_trajectories=1, max_steps=4, batch_size=64, window="random")
    batch = ContextSampler(pool, config).sample_batch(np.random.default_rng(0))
    assert batch["mask"].all() and len(np.unique(batch["timesteps"][:, 0])) > 3
    for row in range(64):  # k = 1: the target is the episode's own return, rtg its return-to-go
        episode = pool[int(batch["observations"][row, 0, 0])]
        t = batch["timesteps"][row]
        np.testing.assert_array_equal(t, np.arange(t[0], t[0] + 4))
        np.testing.assert_allclose(batch["returns_to_go"][row], episode.returns_to_go()[t], rtol=1e-6, atol=1e-5)


def test_determinism_and_prefetch():
    pool = _pool()
    sampler = ContextSampler(pool, SamplerConfig(num_trajectories=3, max_steps=40, batch_size=4))
    first, again, other = sampler.batches(7), sampler.batches(7), sampler.batches(8)
    a, b, c = [next(first) for _ in range(3)], [next(again) for _ in range(3)], next(other)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(a[0]["observations"], c["observations"])
    with sampler.prefetch(7) as prefetched:
        for expected in a:
            got = next(prefetched)
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key])


def test_top_fraction_filter():
    pool = _pool(n=8)
    order = np.argsort([-t.total_return for t in pool])
    kept = top_fraction(pool, 0.25)
    assert [int(t.observations[0, 0]) for t in kept] == sorted(order[:2])
    sampler = ContextSampler(pool, SamplerConfig(num_trajectories=1, max_steps=30, batch_size=32,
                                                 filter_top_fraction=0.25))
    seen = set(sampler.sample_batch(np.random.default_rng(0))["observations"][:, 0, 0].astype(int))
    assert seen == set(order[:2].tolist())
    assert len(top_fraction(pool, 0.01)) == 1


@pytest.mark.parametrize("change, message", [
    (dict(num_trajectories=0), "num_trajectories"),
    (dict(max_steps=2.5), "max_steps"),
    (dict(window="middle"), "window"),
    (dict(loss_on="first"), "loss_on"),
    (dict(k_sampling="poisson"), "k_sampling"),
    (dict(filter_top_fraction=0.0), "filter_top_fraction"),
    (dict(prefetch=0), "prefetch"),
    (dict(group_by="goal"), "group_by"),
])
def test_config_errors(change, message):
    with pytest.raises(ValueError, match=f"SamplerConfig.{message}"):
        SamplerConfig(**change)


def test_sampler_errors():
    with pytest.raises(ValueError, match="at least one trajectory"):
        ContextSampler([], SamplerConfig())
    with pytest.raises(ValueError, match="num_trajectories=3 exceeds the 2 episodes"):
        ContextSampler([A, B], SamplerConfig(num_trajectories=3))
    wide = random_trajectories(0, [3], obs_dim=5)[0]
    with pytest.raises(ValueError, match="disagree on"):
        ContextSampler([A, wide], SamplerConfig(num_trajectories=1))


def test_prefetcher_raises_producer_errors_and_stops():
    calls = iter([1, 2])
    with Prefetcher(lambda: next(calls), size=1) as prefetcher:
        assert [next(prefetcher), next(prefetcher)] == [1, 2]
        with pytest.raises(StopIteration):  # the producer's StopIteration is handed over, then it stops
            next(prefetcher)
    def broken():
        raise RuntimeError("sampling failed")

    with Prefetcher(broken) as prefetcher, pytest.raises(RuntimeError, match="sampling failed"):
        next(prefetcher)
    counter = iter(range(10**9))
    prefetcher = Prefetcher(lambda: next(counter), size=2)
    assert next(prefetcher) == 0
    prefetcher.close()
    assert not any(t.name == "datasets-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="at least 1"):
        Prefetcher(lambda: 0, size=0)


def _tasked_pool(tasks=3, per_task=6, seed=0):
    """Episodes whose first observation value names them and whose task is one of `tasks` goals."""
    pool = _pool(n=tasks * per_task, seed=seed)
    goals = np.random.default_rng(seed).normal(size=(tasks, 2))
    return [t.replace(task=goals[i % tasks], history=i % tasks + 10 * (i // (tasks * 3))) for i, t in
            enumerate(pool)], goals


@pytest.mark.parametrize("group_by", ["task", "history"])
def test_grouped_chains_hold_one_task_and_mix_tasks_across_the_batch(group_by):
    pool, goals = _tasked_pool()
    config = SamplerConfig(num_trajectories=3, max_steps=120, batch_size=48, group_by=group_by)
    sampler = ContextSampler(pool, config)
    batch = sampler.sample_batch(np.random.default_rng(1))
    assert "completed" not in batch and set(batch) == set(sampler.spec())
    _check_batch(batch, pool, 3, "end")
    seen = set()
    for row in range(48):
        valid = batch["mask"][row]
        ids = set(batch["observations"][row, valid, 0].astype(int).tolist())
        assert len(ids) == 3
        values = {getattr(pool[i], group_by).tobytes() if group_by == "task" else pool[i].history for i in ids}
        assert len(values) == 1  # every chain's episodes share one task (one history)
        seen |= values
    assert len(seen) == len(sampler.groups) == (3 if group_by == "task" else 6)  # tasks mix across the batch


def test_ungrouped_chains_mix_tasks():
    pool, _ = _tasked_pool()
    batch = ContextSampler(pool, SamplerConfig(num_trajectories=3, max_steps=120, batch_size=48)).sample_batch(
        np.random.default_rng(1))
    mixed = [len({pool[i].task.tobytes() for i in batch["observations"][row, batch["mask"][row], 0].astype(int)})
             for row in range(48)]
    assert max(mixed) > 1


def test_grouping_errors():
    pool, _ = _tasked_pool(tasks=3, per_task=2)
    with pytest.raises(ValueError, match="num_trajectories=3 exceeds the 2 episodes of task"):
        ContextSampler(pool, SamplerConfig(num_trajectories=3, group_by="task"))
    untasked = [pool[0].replace(task=None)] + pool[1:]
    with pytest.raises(ValueError, match="group_by='task' needs every episode's task"):
        ContextSampler(untasked, SamplerConfig(num_trajectories=1, group_by="task"))
