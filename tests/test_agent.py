"""The Agentic Transformer: tokens, causality, sharded equivalence, KV-cached decoding, overfitting."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agent.config import preset
from agent.model import AgenticTransformer
from agent.policy import InContextPolicy
from agent.sharding import param_shardings, spec_for
from agent.tokens import STEP_KEYS, decode_window, step_inputs
from agent.train import OptimConfig, action_loss, init_state, make_train_step, train_step
from datasets import ContextSampler, SamplerConfig
from datasets.synthetic import random_trajectories
from ring import make_mesh

OBS, ACT = 5, 2


def _batch(seed=0, steps=64, k=3, batch_size=4):
    trajectories = random_trajectories(seed, [20] * 8, obs_dim=OBS, act_dim=ACT)
    sampler = ContextSampler(trajectories, SamplerConfig(num_trajectories=k, max_steps=steps, batch_size=batch_size,
                                                         prefetch=1))
    raw = sampler.sample_batch(np.random.default_rng(seed))
    return {**step_inputs(raw), "loss_mask": raw["loss_mask"]}


def _params(model, seed=0):
    return init_state(model, OptimConfig(), _batch(), seed).params


def test_step_inputs_golden():
    # One row: the last 2 steps of trajectory 0 (cut by the window), then 3 steps of trajectory 1, then padding.
    raw = {
        "observations": np.arange(6, dtype=np.float32).reshape(1, 6, 1),
        "actions": np.array([[[1.], [2.], [3.], [4.], [5.], [0.]]], np.float32),
        "rewards": np.array([[10., 20., 30., 40., 50., 0.]], np.float32),
        "returns_to_go": np.array([[7., -13., 120., 90., 50., 0.]], np.float32),
        "timesteps": np.array([[8, 9, 0, 1, 2, 0]], np.int32),
        "trajectory_index": np.array([[0, 0, 1, 1, 1, 0]], np.int32),
        "mask": np.array([[True, True, True, True, True, False]]),
    }
    inputs = step_inputs(raw)
    np.testing.assert_array_equal(inputs["prev_actions"][0, :, 0], [0, 1, 0, 3, 4, 0])
    np.testing.assert_array_equal(inputs["prev_rewards"][0], [0, 10, 0, 30, 40, 0])
    assert set(inputs) == set(STEP_KEYS) | {"labels"}
    np.testing.assert_array_equal(inputs["labels"], raw["actions"])  # without labels the loss predicts the actions
    # Token bookkeeping: interleaved (R, s, a, r) predicts from s; a decode call feeds a_prev, r_prev, R, s.
    cfg = preset("tiny", token_layout="interleaved")
    assert cfg.modalities == ("return", "state", "action", "reward") and cfg.action_token == 1
    assert decode_window(4, 1, first=True) == (4, 6) and decode_window(4, 1, first=False) == (2, 6)
    bc = preset("tiny", token_layout="interleaved", use_returns=False)
    assert bc.modalities == ("state", "action", "reward") and bc.action_token == 0
    assert decode_window(1, 0, first=False) == (1, 2)  # fused: one token per step
    with pytest.raises(ValueError, match="missing keys"):
        step_inputs({"observations": raw["observations"]})


@pytest.mark.parametrize("layout", ["fused", "interleaved"])
def test_causality(layout):
    model = AgenticTransformer(preset("tiny", token_layout=layout, attention="blockwise", query_chunk_size=16,
                                      key_chunk_size=16), action_dim=ACT)
    batch = _batch()
    params = _params(model)
    inputs = {k: batch[k] for k in STEP_KEYS}
    base = model.apply({"params": params}, inputs)["action"]
    t = 30
    # The step's own action and everything after it: earlier and current predictions unchanged.
    future = dict(inputs)
    for key in ("actions", "rewards"):
        future[key] = inputs[key].copy()
        future[key][:, t:] += 3.0
    for key in ("observations", "returns_to_go", "prev_actions", "prev_rewards"):
        future[key] = inputs[key].copy()
        future[key][:, t + 1:] += 3.0
    out = model.apply({"params": params}, future)["action"]
    np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6)
    assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max() > 1e-3  # the perturbation does reach later steps
    # The current state does change the current prediction.
    now = dict(inputs, observations=inputs["observations"].copy())
    now["observations"][:, t] += 3.0
    assert np.abs(model.apply({"params": params}, now)["action"][:, t] - base[:, t]).max() > 1e-3


@pytest.mark.parametrize("layout", ["fused", "interleaved"])
def test_sharded_train_step_matches_dense_single_device(layout):
    batch = _batch(steps=64, batch_size=4)
    dense = AgenticTransformer(preset("tiny", token_layout=layout, attention="reference"), action_dim=ACT)
    mesh = make_mesh("dp=2,sp=4")
    ring_model = AgenticTransformer(preset("tiny", token_layout=layout, attention="ring", query_chunk_size=8,
                                           key_chunk_size=8), action_dim=ACT, mesh=mesh)
    optim = OptimConfig(warmup_steps=1)
    state = init_state(dense, optim, batch, 0)

    def loss_and_grads(model):
        def loss(params):
            predictions = model.apply({"params": params}, {k: batch[k] for k in STEP_KEYS})
            return action_loss(predictions, batch["actions"], batch["loss_mask"])[0]
        return jax.jit(jax.value_and_grad(loss))(state.params)

    want_loss, want_grads = loss_and_grads(dense)
    got_loss, got_grads = loss_and_grads(ring_model)
    assert abs(float(got_loss) - float(want_loss)) <= 1e-4 * abs(float(want_loss))
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-4 * max(np.abs(np.asarray(want)).max(), 1e-6)

    # The jitted, sharded, donating train step takes the same step as the plain one.
    new_plain, plain_metrics = jax.jit(lambda s, b: train_step(s, b, model=dense, optim=optim))(state, batch)
    step, sharded_state = make_train_step(ring_model, optim, state, mesh)  # may take over state's buffers
    new_sharded, metrics = step(sharded_state, batch)
    assert abs(float(metrics["loss"]) - float(plain_metrics["loss"])) <= 1e-4 * abs(float(plain_metrics["loss"]))
    for got, want in zip(jax.tree.leaves(new_sharded.params), jax.tree.leaves(new_plain.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
    assert int(new_sharded.step) == 1 and metrics["tokens"] == 4 * 64 * ring_model.config.tokens_per_step


@pytest.mark.parametrize("layout", ["fused", "interleaved"])
def test_kv_cached_decoding_equals_recompute(layout):
    cfg = preset("tiny", token_layout=layout, attention="reference")
    model = AgenticTransformer(cfg, action_dim=ACT)
    params = _params(model)
    sharded = AgenticTransformer(cfg, action_dim=ACT, mesh=make_mesh("sp=-1"))
    n_envs, length, trials = 3, 6, 3
    policies = [InContextPolicy(m, params, num_envs=n_envs, obs_dim=OBS, episode_length=length, num_trials=trials,
                                target_return=3.0, recompute=r) for m, r in ((model, True), (model, False), (sharded, False))]
    rng = np.random.default_rng(1)
    worst = [0.0, 0.0]
    for _ in range(trials):
        for policy in policies:
            policy.start_trial()
        for _ in range(length):
            obs = rng.standard_normal((n_envs, OBS)).astype(np.float32)
            actions = [policy.act(obs) for policy in policies]
            for i in (0, 1):
                worst[i] = max(worst[i], float(np.abs(actions[i + 1] - actions[0]).max()))
            rewards = rng.random(n_envs).astype(np.float32)
            for policy in policies:
                policy.observe(actions[0], rewards)
    assert worst[0] <= 1e-5 and worst[1] <= 1e-5, worst


def _play(policy, obs, rewards, trials, taken=None):
    """The actions [trials, steps, n, act] of ``policy`` fed ``obs`` [trials, steps, n, obs] and ``rewards``;
    the context records the actions ``taken`` (same shape; default: its own)."""
    out = []
    for trial in trials:
        policy.start_trial()
        steps = []
        for t in range(obs.shape[1]):
            steps.append(policy.act(obs[trial, t]))
            policy.observe(steps[-1] if taken is None else taken[trial, t], rewards[trial, t])
        out.append(steps)
    return np.array(out)


def test_trial_window_sees_the_last_trials_renumbered():
    # A model trained on k = 2 trajectories, evaluated over 3 trials: trial 2 conditions on trials 1 and 2
    # only, as trajectories 0 and 1, which is a fresh policy fed just those two trials.
    model = AgenticTransformer(preset("tiny", attention="reference"), action_dim=ACT)
    params = _params(model)
    steps, n = 4, 2
    rng = np.random.default_rng(5)
    obs = rng.standard_normal((3, steps, n, OBS)).astype(np.float32)
    rewards = rng.random((3, steps, n)).astype(np.float32)
    taken = rng.uniform(-1, 1, (3, steps, n, ACT)).astype(np.float32)

    def make(**kwargs):
        return InContextPolicy(model, params, num_envs=n, obs_dim=OBS, episode_length=steps, target_return=2.0,
                               **kwargs)

    windowed = _play(make(num_trials=3, trial_window=2), obs, rewards, range(3), taken)
    full = _play(make(num_trials=3, recompute=True), obs, rewards, range(3), taken)
    last_two = _play(make(num_trials=2, recompute=True), obs, rewards, [1, 2], taken)
    np.testing.assert_allclose(windowed[:2], full[:2], atol=1e-6)  # the window is not full yet
    np.testing.assert_allclose(windowed[2], last_two[1], atol=1e-6)
    assert np.abs(windowed[2] - full[2]).max() > 1e-3  # forgetting trial 0 changes what it does
    cached = _play(make(num_trials=3), obs, rewards, range(3))  # and a window wider than the trials is none
    np.testing.assert_allclose(_play(make(num_trials=3, trial_window=5), obs, rewards, range(3)), cached, atol=1e-5)
    with pytest.raises(ValueError, match="trial_window=0"):
        make(num_trials=3, trial_window=0)
    with pytest.raises(ValueError, match="trial_window=17 exceeds the model's max_trajectories=16"):
        make(num_trials=40, trial_window=17)


@pytest.mark.parametrize("window", [None, 3])
def test_reset_policy_acts_like_a_fresh_one(window):
    # After reset() the cache still holds the first trial's keys; a fresh policy must not be told apart.
    model = AgenticTransformer(preset("tiny", attention="reference"), action_dim=ACT)
    params = _params(model)
    make = lambda: InContextPolicy(model, params, num_envs=2, obs_dim=OBS, episode_length=5, num_trials=1,
                                   target_return=2.0, window=window)
    reused, fresh = make(), make()
    rng = np.random.default_rng(4)
    obs = rng.standard_normal((2, 5, 2, OBS)).astype(np.float32)
    rewards = rng.random((2, 5, 2)).astype(np.float32)
    runs = []
    for trial, policies in ((0, [reused]), (1, [reused, fresh])):
        if trial:
            reused.reset()
        for policy in policies:
            policy.start_trial()
        actions = []
        for t in range(5):
            actions.append([policy.act(obs[trial, t]) for policy in policies])
            for policy, action in zip(policies, actions[-1]):
                policy.observe(action, rewards[trial, t])
        runs.append(actions)
    first, again = np.array([a[0] for a in runs[0]]), np.array([a[0] for a in runs[1]])
    assert np.abs(first - again).max() > 1e-3  # the second trial's inputs differ, so must its actions
    np.testing.assert_array_equal(np.array([a[0] for a in runs[1]]), np.array([a[1] for a in runs[1]]))
    assert reused.trial == 0
    if window is None:  # the cached path counts its tokens from zero again
        np.testing.assert_array_equal(reused.lengths, 5 * model.config.tokens_per_step)


def test_decoding_with_an_environment_that_finishes_early():
    # Environment 1 ends trial 0 after 2 steps; its later actions must be those of a policy that only
    # ever saw its own steps, and environment 0 must not notice.
    cfg = preset("tiny", token_layout="interleaved", attention="reference")
    model = AgenticTransformer(cfg, action_dim=ACT)
    params = _params(model)
    rng = np.random.default_rng(2)
    lengths = [[4, 2], [4, 4]]  # per trial, per environment
    obs = rng.standard_normal((2, 4, 2, OBS)).astype(np.float32)
    rewards = rng.random((2, 4, 2)).astype(np.float32)
    both = InContextPolicy(model, params, num_envs=2, obs_dim=OBS, episode_length=4, num_trials=2, target_return=2.0)
    alone = [InContextPolicy(model, params, num_envs=1, obs_dim=OBS, episode_length=4, num_trials=2,
                             target_return=2.0) for _ in range(2)]
    for trial in range(2):
        for policy in (both, *alone):
            policy.start_trial()
        for t in range(4):
            active = np.array([t < lengths[trial][0], t < lengths[trial][1]])
            got = both.act(obs[trial, t], active)
            both.observe(got, np.where(active, rewards[trial, t], 0.0))
            for env in np.flatnonzero(active):
                want = alone[env].act(obs[trial, t, env][None])
                alone[env].observe(want, rewards[trial, t, env][None])
                np.testing.assert_allclose(got[env], want[0], atol=1e-6)


def test_overfits_a_tiny_batch():
    batch = _batch(steps=32, batch_size=2, k=2)
    model = AgenticTransformer(preset("tiny", attention="reference"), action_dim=ACT)
    optim = OptimConfig(learning_rate=3e-3, warmup_steps=10, total_steps=400, clip_norm=1.0, weight_decay=0.0)
    state = init_state(model, optim, batch, 0)
    step = jax.jit(lambda s, b: train_step(s, b, model=model, optim=optim))
    first = None
    for _ in range(400):
        state, metrics = step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) <= first / 100, (first, float(metrics["loss"]))


def test_gaussian_head_and_bc_configuration():
    batch = _batch()
    for cfg in (preset("tiny", action_head="gaussian"), preset("tiny", action_head="mixture", num_components=3),
                preset("tiny", use_returns=False, use_rewards=False, token_layout="interleaved")):
        model = AgenticTransformer(cfg, action_dim=ACT)
        params = _params(model)
        out = model.apply({"params": params}, {k: batch[k] for k in STEP_KEYS})
        assert out["action"].shape == (4, 64, ACT)
        loss, _ = action_loss(out, batch["actions"], batch["loss_mask"])
        assert np.isfinite(float(loss))
        if cfg.action_head == "gaussian":  # the log std is clipped to its range, whatever the layer says
            from agent.heads import LOG_STD_RANGE

            for bias in (-1e3, 1e3):
                pushed = jax.tree_util.tree_map_with_path(
                    lambda path, x, b=bias: x + b if "log_std_head" in jax.tree_util.keystr(path)
                    and "bias" in jax.tree_util.keystr(path) else x, params)
                log_std = model.apply({"params": pushed}, {k: batch[k] for k in STEP_KEYS})["log_std"]
                np.testing.assert_array_equal(np.asarray(log_std), LOG_STD_RANGE[0] if bias < 0 else LOG_STD_RANGE[1])
        if cfg.action_head == "mixture":
            assert out["means"].shape == (4, 64, 3, ACT) and out["logits"].shape == (4, 64, 3)
            assert {"mixture_logits_head", "action_head", "log_std_head"} <= set(params)

            def first_actions(sample):
                policy = InContextPolicy(model, params, num_envs=2, obs_dim=OBS, episode_length=3, num_trials=1,
                                         target_return=1.0, sample=sample, seed=7)
                policy.start_trial()
                return policy.act(np.ones((2, OBS), np.float32))

            sampled = first_actions(True)
            np.testing.assert_array_equal(sampled, first_actions(True))  # seeded draws
            assert not np.allclose(sampled, first_actions(False))  # a draw, not the heaviest component's mean
        if not cfg.use_returns:  # behaviour cloning: no return or reward inputs exist in the model
            assert not {"return_embed", "completion_embed", "reward_embed"} & set(params)


def test_sharding_rules_and_config_errors():
    params = _params(AgenticTransformer(preset("tiny"), action_dim=ACT))
    mesh = make_mesh("fsdp=2,sp=4")
    shardings = param_shardings(params, mesh)
    assert shardings["transformer"]["layers_0"]["mlp"]["wi"].spec == jax.sharding.PartitionSpec("fsdp", "tp")
    with pytest.raises(ValueError, match="key/kernel' dimension 1 of \\(32, 1, 16\\) does not divide"):
        param_shardings(params, make_mesh("tp=2,sp=4"))  # one K/V head cannot split over two devices
    with pytest.raises(ValueError, match="matches no sharding rule"):
        spec_for("mystery/kernel", (4, 4), dict(mesh.shape))
    with pytest.raises(ValueError, match="does not divide"):
        spec_for("transformer/layers_0/mlp/wi", (3, 8), dict(mesh.shape))
    with pytest.raises(ValueError, match="token_layout='braided' is unknown"):
        preset("tiny", token_layout="braided")
    with pytest.raises(ValueError, match="model preset 'huge' is unknown"):
        preset("huge")
    with pytest.raises(ValueError, match="needs AgenticTransformer\\(mesh=...\\)"):
        AgenticTransformer(preset("tiny", attention="ring"), action_dim=ACT).init(jax.random.key(0), {
            k: v for k, v in _batch().items() if k in STEP_KEYS})
    with pytest.raises(ValueError, match="exceeds the model's max_timestep"):
        model = AgenticTransformer(preset("tiny"), action_dim=ACT)
        InContextPolicy(model, params, num_envs=1, obs_dim=OBS, episode_length=10_000, num_trials=1, target_return=1.0)


def test_presets_sizes():
    # The paper's AT and the 350M model of the Ring Attention paper's RL experiment.
    paper = preset("paper")
    assert (paper.num_layers, paper.num_heads, paper.embed_dim, paper.activation) == (3, 1, 128, "relu")
    big = dataclasses.replace(preset("350m"), attention="reference")
    shapes = jax.eval_shape(lambda: AgenticTransformer(big, action_dim=6).init(
        jax.random.key(0), {k: jnp.zeros((1, 8, 24) if k == "observations" else (1, 8, 6) if "actions" in k else (1, 8),
                                         jnp.int32 if k in ("timesteps", "trajectory_index") else jnp.float32)
                            for k in STEP_KEYS}))
    count = sum(x.size for x in jax.tree.leaves(shapes))
    assert 300e6 <= count <= 400e6, count


def test_completion_flag_is_one_definition_for_sampler_model_and_policy():
    """Rewards of 0.1 (not exact in binary) summing to the target: the sampler's and the acting policy's
    returns-to-go agree bit for bit, so the flag the model embeds is the same in training and acting."""
    from agent.tokens import completion_flag
    from datasets import Trajectory

    rewards = np.full(12, 0.1, np.float32)
    rewards[:3] = rewards[10:] = 0.0  # the target is reached at step 9; steps 10 and 11 come after
    low = random_trajectories(1, [12], obs_dim=OBS, act_dim=ACT)[0]
    best = low.replace(rewards=rewards)
    low = low.replace(rewards=np.zeros(12, np.float32))
    assert isinstance(best, Trajectory)
    sampler = ContextSampler([low, best], SamplerConfig(num_trajectories=2, max_steps=24, batch_size=1, prefetch=1))
    raw = sampler.sample_batch(np.random.default_rng(0))
    sampled_rtg = raw["returns_to_go"][0, 12:]  # the best episode comes last in the ascending chain
    target = best.total_return  # the sampler relabels to the chain's best return, summed in float64
    assert raw["target_return"][0] == np.float32(target)

    model = AgenticTransformer(preset("tiny", attention="reference"), action_dim=ACT)
    policy = InContextPolicy(model, _params(model), num_envs=1, obs_dim=OBS, episode_length=12, num_trials=1,
                             target_return=target)
    policy.start_trial()
    acting_rtg = []
    for t in range(12):
        policy.act(best.observations[t][None])
        acting_rtg.append(policy._pending[0]["returns_to_go"][0])
        policy.observe(best.actions[t][None], rewards[t:t + 1])
    np.testing.assert_array_equal(np.array(acting_rtg, np.float32), sampled_rtg)
    flags = completion_flag(sampled_rtg)
    before = np.concatenate([[0.0], np.cumsum(rewards.astype(np.float64))[:-1]])
    np.testing.assert_array_equal(flags, before >= target)  # reached before acting at t
    np.testing.assert_array_equal(flags, np.arange(12) >= 10)
    np.testing.assert_array_equal(np.asarray(completion_flag(jnp.asarray(sampled_rtg))), flags)


def test_uniform_random_policy_is_the_seeded_floor():
    import envs
    from agent.policy import UniformRandomPolicy, run_trials

    class Recorder:
        def __init__(self):
            self.actions = []

        def begin(self, trial, batch_env):
            pass

        def step(self, trial, batch_env, actions, rewards, active):
            self.actions.append(actions)

    runs = []
    for _ in range(2):
        recorder = Recorder()
        policy = UniformRandomPolicy(4, 2, seed=3)
        returns = run_trials(policy, envs.make_batch("point_nav_hidden", 4, seed=0), 2, observer=recorder)
        policy.reset()  # nothing to forget: the next trial draws new actions
        actions = np.array(recorder.actions)
        assert returns.shape == (2, 4) and actions.shape == (40, 4, 2)
        assert actions.min() >= -1 and actions.max() <= 1 and actions.std() > 0.5
        assert np.abs(policy.act(None) - actions[-1]).max() > 0
        runs.append(actions)
    np.testing.assert_array_equal(runs[0], runs[1])  # one seed, one stream
