"""Data collection, a library: the soft actor-critic that learns while it collects, its behaviour policies, the
collector that writes their episodes through the ``datasets`` writers, the scripted demonstrators' histories
and the per-task relabelling. Their command lines are ``python -m experiments.collect`` and its subcommands."""
