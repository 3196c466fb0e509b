"""ringrl experiments package: the jobs (train, evaluate, sweep, collect) and ``load_policy``.

    from experiments import load_policy     # act with a trained run from your own code (experiments.policy)
"""

from pathlib import Path as _Path

__all__ = ["Policy", "load_policy"]


def _check_datasets_is_ringrls() -> None:
    """ringrl's data package is called ``datasets``, as HuggingFace's is: where that one is found first, say so
    once, here, instead of an ImportError deep inside a job."""
    import importlib.util

    ours = _Path(__file__).resolve().parent.parent / "datasets"
    spec = importlib.util.find_spec("datasets")
    found = _Path(spec.origin).resolve().parent if spec is not None and spec.origin else None
    if found != ours:
        raise ImportError(
            f"the package `datasets` found here is {found or 'missing'}, not ringrl's ({ours}): HuggingFace "
            "`datasets` is installed in this Python environment, and ringrl's import names (ring, datasets, envs, "
            "agent, experiments) need one of their own. Install ringrl in a separate virtual environment: "
            "python3 -m venv .venv && .venv/bin/pip install -e .")


_check_datasets_is_ringrls()


def __getattr__(name: str):
    # Lazily, so that importing a job's config (which imports this package) stays light.
    if name in __all__:
        from experiments import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
