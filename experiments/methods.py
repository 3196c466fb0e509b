"""The methods, as configurations of one model: the one table the sweep, the presets and the docs read.

A method changes how contexts are drawn, what the model conditions on, what the loss predicts and how the
policy acts; the model, the train step and the policy are the same code for all of them.

| method | context | conditioning | label | acting |
|---|---|---|---|---|
| ``at`` | k episodes of one history/task, sorted by return | return-to-go relabelled to the chain's best, completion flag | the action taken | k trials in one growing context (or the last k) |
| ``ad`` | k consecutive episodes of one learning history, in the order played | none | the action taken | a rolling context of the last k episodes |
| ``dpt`` | as AD | none | the optimal action (from the stored task) | as AD, actions sampled (as DPT acts) |
| ``dt`` | one episode, a ``window``-step slice | return-to-go | the action taken | each trial alone, the last ``window`` steps |
| ``bc10`` | as DT, from the best 10% of episodes | none | the action taken | as DT |
| ``oracle`` | as DT, the task appended to every observation | return-to-go | the action taken | as DT, told the task |
| ``random`` | nothing is trained | | | uniform random actions |

``k`` is the context length in episodes (trajectories in context) for AT, AD and DPT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from experiments.config import ExperimentConfig

IN_CONTEXT = ("at", "ad", "dpt")  # swept over k
BASELINES = ("dt", "bc10", "oracle", "random")
METHODS = IN_CONTEXT + BASELINES
HIDDEN_ONLY = ("oracle", "random", "dpt")  # need a hidden-task family (a task to observe, a floor, a label)


@dataclasses.dataclass(frozen=True)
class Cell:
    """What every method's config is built from.

    Attributes:
      base: the preset's config (data, model, optimiser) with the cell's training length and seed set.
      episode_length: agent steps in an episode.
      ring: devices the ring spans (1 without ring attention): context lengths are fitted to it.
      batch: ``batch(context_steps) -> batch size`` (equal tokens per batch across methods, or the preset's).
      trials: trials every method is evaluated over (None: AT and AD run k trials).
      baseline_trials: the single-episode baselines' independent trials.
      window: DT's and BC's context in steps.
    """

    base: ExperimentConfig
    episode_length: int
    ring: int
    batch: Callable[[int], int]
    trials: int | None
    baseline_trials: int
    window: int = 20

    def replace(self, **sections) -> ExperimentConfig:
        return self.base.replace(**sections)


def _in_context(cell: Cell, k: int, *, order: str, returns: bool, labels: str) -> ExperimentConfig:
    base = cell.base
    steps = base.model.fitting_steps(k * cell.episode_length, cell.ring)
    trials = cell.trials or k
    group_by = "history" if order == "history" else base.sampler.group_by
    return cell.replace(
        data={"labels": labels},
        sampler={"num_trajectories": k, "max_steps": steps, "window": "end", "batch_size": cell.batch(steps),
                 "order": order, "group_by": group_by},
        model={"max_trajectories": max(base.model.max_trajectories, k), "use_returns": returns},
        eval={"num_trials": trials, "context_trials": k if k < trials else None})


def at(cell: Cell, k: int) -> ExperimentConfig:
    """The Agentic Transformer: chains of k episodes sorted by return, conditioned on the best."""
    return _in_context(cell, k, order="return", returns=True, labels="taken")


def ad(cell: Cell, k: int) -> ExperimentConfig:
    """Algorithm Distillation: k consecutive episodes of a learning history in their own order."""
    return _in_context(cell, k, order="history", returns=False, labels="taken")


def dpt(cell: Cell, k: int) -> ExperimentConfig:
    """Decision-Pretrained Transformer: AD's contexts, every step labelled with the task's optimal action."""
    config = _in_context(cell, k, order="history", returns=False, labels="optimal")
    return config.replace(eval={"sample": True})


def _single_episode(cell: Cell, **model) -> dict:
    """DT's sections: a ``window``-step slice of one episode, evaluated trial by trial on the last steps."""
    base, window = cell.base, cell.window
    # A 20-step window needs no ring: the baselines attend on one device even where AT uses the ring.
    short = dict(query_chunk_size=window, key_chunk_size=window, ffn_chunk_size=window,
                 attention="blockwise" if base.model.attention == "ring" else base.model.attention, **model)
    return dict(sampler=dataclasses.replace(base.sampler, num_trajectories=1, max_steps=window, window="random",
                                            batch_size=cell.batch(window), order="return"),
                model=dataclasses.replace(base.model, use_returns=True, **short),
                eval=dataclasses.replace(base.eval, num_trials=cell.baseline_trials, context_steps=window,
                                         reset_context_each_trial=True, context_trials=None))


def dt(cell: Cell) -> ExperimentConfig:
    return cell.replace(**_single_episode(cell))


def bc10(cell: Cell) -> ExperimentConfig:
    sections = _single_episode(cell, use_rewards=False)
    sections["sampler"] = dataclasses.replace(sections["sampler"], filter_top_fraction=0.1)
    sections["model"] = dataclasses.replace(sections["model"], use_returns=False)
    return cell.replace(**sections)


def oracle(cell: Cell) -> ExperimentConfig:
    return cell.replace(data={"observe_task": True}, **_single_episode(cell))


def random(cell: Cell) -> ExperimentConfig:
    """Nothing trains: the seed only draws the actions."""
    return cell.replace(eval={"num_trials": cell.baseline_trials, "reset_context_each_trial": False,
                              "context_trials": None})


TABLE: dict[str, Callable] = {"at": at, "ad": ad, "dpt": dpt, "dt": dt, "bc10": bc10, "oracle": oracle,
                              "random": random}


def method_configs(method: str, cell: Cell, trajectories: list[int]) -> dict[str, ExperimentConfig]:
    """``{cell name prefix: config}`` of one method: ``at_k4`` ... for the in-context methods (one per k),
    the method's name for the baselines."""
    if method not in TABLE:
        raise ValueError(f"method {method!r} is unknown; expected one of {list(METHODS)}")
    if method in IN_CONTEXT:
        return {f"{method}_k{k}": TABLE[method](cell, k) for k in trajectories}
    return {method: TABLE[method](cell)}
