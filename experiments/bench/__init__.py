"""Benchmarks, one module each, run as ``python -m experiments.bench.<module>``:

- ``ring_attention``: ring attention (three layouts) against the official ``ringattention`` package and
  dense attention on simulated CPU devices: time and per-device memory.
- ``agent_context``: the Agentic Transformer's train step against trajectories in context (dense,
  blockwise, ring), the largest context under a per-device memory budget, cached against recomputed
  decoding.
- ``pallas``: one GPU: the fused Pallas step against cuDNN and the XLA step, the overhead of
  ``sharded_attention``, the largest agent context on the card; ``pallas_sweep`` holds its tile sweep.
- ``env_stepping``: batched environment steps per second, in process and over a process pool.
- ``data_loading``: reading a large ExoRL dataset and the context sampler's throughput.

``harness`` is what they share: the command line (``--out``, ``--tiny``, simulated devices), the mesh,
timing, the machine description recorded with every result, and the atomic JSON write.
"""
