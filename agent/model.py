"""The Agentic Transformer: modality embeddings, the ring transformer stack, and an action head.

Liu & Abbeel (2023), "Emergent Agentic Transformer from Chain of Hindsight Experience": a causal
transformer over several trajectories sorted by return, predicting each action from the states,
actions, rewards, target returns-to-go and completion flags before it. With ``attention="ring"`` the
token sequence is put into the ring layout once, after embedding, and back once before the head.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agent.config import ModelConfig
from agent.heads import action_head
from agent.tokens import completion_flag
from ring.decode import make_cached_attention
from ring.sharded import sharded_to_layout
from ring.transformer import Transformer, make_attention



class AgenticTransformer(nn.Module):
    """Maps per-step inputs (``agent.tokens.STEP_KEYS``) to action predictions.

    Attributes:
      config: the ModelConfig.
      action_dim: size of the action vector (the number of choices for the categorical head, whose actions
        are integers, embedded one-hot).
      obs_mean, obs_std: the dataset's observation statistics (``datasets.NormStats``). Observations are
        standardised here, the one place that does it for training and for acting alike; empty: as given.
      mesh: the device mesh, needed for ``attention="ring"`` and for a KV cache sharded over "sp".
      batch_axes: mesh axes that shard the batch.
    """

    config: ModelConfig
    action_dim: int
    obs_mean: tuple[float, ...] = ()
    obs_std: tuple[float, ...] = ()
    mesh: Any = None
    batch_axes: tuple[str, ...] = ("dp", "fsdp")

    def stack(self, decoding: bool = False) -> Transformer:
        """The transformer stack (unbound; also gives the KV cache its shape)."""
        cfg = self.config
        if cfg.attention == "ring" and self.mesh is None:
            raise ValueError("ModelConfig.attention='ring' needs AgenticTransformer(mesh=...)")
        mesh = self.mesh if cfg.attention == "ring" else None
        attention = make_attention(cfg.attention, mesh=mesh, batch_axis=self._batch_axis(), layout=cfg.layout,
                                   natural_order=False, query_chunk_size=cfg.query_chunk_size,
                                   key_chunk_size=cfg.key_chunk_size, impl=cfg.attention_impl,
                                   head_axis="tp" if mesh is not None and "tp" in mesh.shape else None,
                                   **({"strategy": cfg.strategy, "memory_budget": None if cfg.memory_budget_gib is None
                                       else int(cfg.memory_budget_gib * 2**30)} if mesh is not None else {}))
        # Decoding shards the cache's length over "sp" and keeps the (small) batch of environments whole.
        cached = make_cached_attention(mesh=self.mesh if decoding else None)
        return Transformer(num_layers=cfg.num_layers, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                           head_dim=cfg.head_dim, mlp_dim=cfg.mlp_ratio * cfg.embed_dim, attention_fn=attention,
                           ffn_chunk_size=cfg.ffn_chunk_size, activation=cfg.activation,
                           remat_policy=cfg.remat_policy, scan_layers=cfg.scan_layers,
                           cached_attention_fn=cached, seq_shards=mesh.shape["sp"] if mesh is not None else 1,
                           windows=cfg.layer_windows, parent=None)

    @property
    def sequence_axis(self) -> str | None:
        """The mesh axis that shards a batch's steps: the ring's "sp", or None without a ring."""
        return "sp" if self.mesh is not None else None

    def _batch_axis(self):
        if self.mesh is None:
            return None
        axes = tuple(a for a in self.batch_axes if a in self.mesh.shape)
        return axes or None

    @nn.compact
    def __call__(self, inputs: dict, *, train: bool = False, cache=None, positions=None, window=None):
        """Action predictions for every step of ``inputs``.

        Args:
          inputs: ``agent.tokens.STEP_KEYS`` arrays, [B, S, ...].
          train: apply dropout (needs a "dropout" RNG).
          cache, positions, window: decoding: the tokens ``window = (start, end)`` of the embedded steps
            are written into ``cache`` at ``positions`` [B, end - start] and the output of the last
            one is returned.

        Returns:
          Training: the action head's dict (``agent.heads``): "action" [B, S, act], and the distribution's
            parameters for the gaussian and mixture heads.
          Decoding: (that dict for the last fed token, [B, act]; updated cache).
        """
        cfg = self.config
        tokens = self._embed(inputs)  # [B, S * tokens_per_step, D]
        tokens = nn.Dropout(cfg.dropout, deterministic=not train)(tokens)
        decoding = cache is not None
        stack = self.stack(decoding).clone(parent=self, name="transformer")
        if decoding:
            start, end = window
            h, cache = stack(tokens[:, start:end], cache=cache, positions=positions)
            return self._head(h[:, -1]), cache
        if cfg.attention == "ring":  # each device permutes its own block: O(block) memory
            relayout = functools.partial(sharded_to_layout, mesh=self.mesh, layout=cfg.layout,
                                         batch_axis=self._batch_axis())
            h = relayout(stack(relayout(tokens)), inverse=True)
        else:
            h = stack(tokens)
        batch, steps = inputs["observations"].shape[:2]
        h = h.reshape(batch, steps, cfg.tokens_per_step, cfg.embed_dim)[:, :, cfg.action_token]
        return self._head(h)

    def _embed(self, inputs):
        cfg = self.config
        dim = cfg.embed_dim
        dense = lambda name: nn.Dense(dim, name=name)  # noqa: E731
        embed = {  # built only for the modalities this configuration reads
            "return": lambda: (dense("return_embed")(inputs["returns_to_go"][..., None] * cfg.return_scale)
                               + nn.Embed(2, dim, name="completion_embed")(
                                   completion_flag(inputs["returns_to_go"]).astype(jnp.int32))),
            "state": lambda: dense("state_embed")(self._standardise(inputs["observations"])),
            "action": lambda: dense("action_embed")(self._action_features(inputs["actions"])),
            "reward": lambda: dense("reward_embed")(inputs["rewards"][..., None]),
        }
        position = (nn.Embed(cfg.max_timestep, dim, name="timestep_embed")(inputs["timesteps"])
                    + nn.Embed(cfg.max_trajectories, dim, name="trajectory_embed")(inputs["trajectory_index"]))
        if cfg.token_layout == "fused":
            step = embed["state"]() + dense("prev_action_embed")(self._action_features(inputs["prev_actions"]))
            if cfg.use_returns:
                step = step + embed["return"]()
            if cfg.use_rewards:
                step = step + dense("prev_reward_embed")(inputs["prev_rewards"][..., None])
            return nn.LayerNorm(name="embed_norm")(step + position)
        stacked = jnp.stack([embed[name]() for name in cfg.modalities], axis=2) + position[:, :, None]
        batch, steps = stacked.shape[:2]
        return nn.LayerNorm(name="embed_norm")(stacked.reshape(batch, steps * len(cfg.modalities), dim))

    def _action_features(self, actions):
        """Actions as the embedding reads them: as given, or one-hot for the categorical head (whose -1, no
        action, is all zeros)."""
        if self.config.action_head != "categorical":
            return actions
        return jax.nn.one_hot(actions, self.action_dim, dtype=jnp.float32)

    def _standardise(self, observations):
        """(observation - dataset mean) / dataset std, in float32 (the identity without statistics)."""
        if not self.obs_mean:
            return observations
        if len(self.obs_mean) != observations.shape[-1] or len(self.obs_std) != len(self.obs_mean):
            raise ValueError(f"observations of size {observations.shape[-1]} do not match the model's statistics "
                             f"({len(self.obs_mean)} means, {len(self.obs_std)} stds)")
        mean, std = jnp.asarray(self.obs_mean, jnp.float32), jnp.asarray(self.obs_std, jnp.float32)
        return (observations.astype(jnp.float32) - mean) / std

    def _head(self, h):
        cfg = self.config
        return action_head(h, cfg.action_head, self.action_dim, cfg.num_components)
