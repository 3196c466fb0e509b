"""Data collection: the soft actor-critic that learns while it collects, its behaviour policies, and the
collector that writes their episodes through the ``datasets`` writers (``python -m experiments.collect``)."""
