"""ringrl experiments package: the jobs (train, evaluate, sweep, collect) and ``load_policy``.

    from experiments import load_policy     # act with a trained run from your own code (experiments.policy)
"""

__all__ = ["Policy", "load_policy"]


def __getattr__(name: str):
    # Lazily, so that importing a job's config (which imports this package) stays light.
    if name in __all__:
        from experiments import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
