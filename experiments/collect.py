"""Collect episodes of a policy in any `envs` task and write them in the ExoRL or D4RL format.

    python -m experiments.collect --out runs/data/demo --task cartpole_swingup --policy random --episodes 10
    python -m experiments.collect --out runs/data/demo --task walker_walk --policy sac --episodes 400 \\
        --action-repeat 2

The collector itself (layout, resumption, the policies) is ``experiments.collection``; ``--help`` lists every
setting with its meaning.
"""

from __future__ import annotations

import sys

from experiments.cli import EXPECTED_ERRORS, enable_compilation_cache, fail, prog_name
from experiments.collection.collector import CollectConfig, collect, data_dir, load_episodes

__all__ = ["CollectConfig", "collect", "data_dir", "load_episodes", "main"]


def main(argv: list[str] | CollectConfig | None = None) -> int:
    """Collects as the command line ``argv`` (default: ``sys.argv[1:]``) or a ``CollectConfig`` asks."""
    import tyro

    config = argv if isinstance(argv, CollectConfig) else tyro.cli(
        CollectConfig, args=argv, description=__doc__.splitlines()[0], prog=prog_name(__name__))
    try:
        enable_compilation_cache()
        log = collect(config)
    except EXPECTED_ERRORS as error:
        return fail(error)
    returns = [entry["return"] for entry in log["episodes"]]
    stop = " (stop return reached)" if log["stopped"] else ""
    print(f"{len(returns)} episodes in {data_dir(config)}{stop}; best return {max(returns):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
