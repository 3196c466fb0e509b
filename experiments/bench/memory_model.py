"""Benchmark: fits the per-device memory model behind ``strategy="auto"`` (``ring.strategy.temp_bytes``).

Compiles forward+backward of causal attention under the ring, all-gather K/V and Ulysses over a grid of
per-device blocks, GQA ratios, head sizes, chunk sizes and ring sizes (up to N simulated CPU devices) (nothing is run: XLA's
memory analysis of the compiled program is deterministic), and for each strategy finds the coefficients
of ``ring.strategy.memory_terms`` whose estimates lie above every compiled program with the least total
(a linear program), then adds ``--margin``. Prints the coefficients to paste into ``ring/strategy.py``,
and how far the estimates of the current ones and of the new ones lie above the programs.

    python -m experiments.bench.memory_model                # the grid the model in ring/strategy.py came from
    python -m experiments.bench.memory_model --blocks 64 512 --head-dims 32
"""

from __future__ import annotations

from experiments.bench import harness

NAME = "memory_model"
TINY = dict(blocks=[16, 32], ratios=[1, 4], head_dims=[8], chunks=[8, 16], q_heads=8, device_counts=[8])


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--blocks", type=int, nargs="+", default=[64, 256, 1024, 4096, 8192])
    p.add_argument("--ratios", type=int, nargs="+", default=[1, 4], help="GQA ratios q_heads / kv_heads")
    p.add_argument("--q-heads", type=int, default=8)
    p.add_argument("--head-dims", type=int, nargs="+", default=[32, 64])
    p.add_argument("--chunks", type=int, nargs="+", default=[128, 512])
    p.add_argument("--device-counts", type=int, nargs="+", default=[2, 8],
                   help="ring sizes (the first devices of --devices): more than one, or the whole-sequence "
                        "term is a multiple of the block terms and the fit cannot tell them apart")
    p.add_argument("--margin", type=float, default=0.05, help="added to the fitted envelope, as a fraction")
    return p


def _compiled_temp(mesh, strategy, shapes):
    """XLA's per-device temp bytes of forward+backward of ``sum(attention(q, k, v))``, compiled only."""
    from experiments.bench.ring_strategies import attention, compile_grad

    fn, sharding = attention(mesh, strategy, shapes.query_chunk)
    seq = shapes.block * shapes.num_devices
    q_shape, kv_shape = ((shapes.batch, seq, heads, shapes.head_dim) for heads in (shapes.q_heads, shapes.kv_heads))
    compiled, _ = compile_grad(fn, q_shape, kv_shape, sharding)
    return int(compiled.memory_analysis().temp_size_in_bytes)


def fit(terms, measured, margin: float):
    """Non-negative coefficients c with ``terms @ c >= measured`` everywhere and the least ``sum(terms @ c)``,
    times ``1 + margin``."""
    import numpy as np
    from scipy.optimize import linprog

    terms, measured = np.asarray(terms, np.float64), np.asarray(measured, np.float64)
    used = terms.any(axis=0)  # a term that is 0 in every program is left at 0
    scale = terms[:, used].max(axis=0)  # coefficients per largest term: a well-conditioned program
    a = terms[:, used] / scale
    result = linprog(a.sum(axis=0), A_ub=-a, b_ub=-measured, bounds=(0, None), method="highs")
    if not result.success:
        raise RuntimeError(f"the envelope's linear program failed: {result.message}")
    coefficients = np.zeros(terms.shape[1])
    coefficients[used] = result.x / scale * (1 + margin)
    return coefficients


def main(argv=None):
    run = harness.start(NAME, _parser(), argv, tiny=TINY)
    args = run.args
    import itertools

    import numpy as np

    from ring import make_mesh
    from ring.strategy import MODELLED, Shapes, memory_terms, temp_bytes

    programs = {strategy: [] for strategy in MODELLED}
    for n in args.device_counts:
        mesh = make_mesh("sp=-1", run.devices[:n])
        for block, ratio, head_dim, chunk in itertools.product(args.blocks, args.ratios, args.head_dims, args.chunks):
            shapes = Shapes(batch=1, block=block, q_heads=args.q_heads, kv_heads=args.q_heads // ratio,
                            head_dim=head_dim, num_devices=n, query_chunk=chunk, key_chunk=chunk)
            for strategy in MODELLED:
                if strategy == "ulysses" and not shapes.ulysses_fits_heads:
                    continue
                measured = _compiled_temp(mesh, strategy, shapes)
                programs[strategy].append({"shapes": shapes.__dict__, "measured": measured,
                                           "terms": memory_terms(strategy, shapes),
                                           "current": temp_bytes(strategy, shapes)})
                print(f"{strategy:9s} devices={n} block={block:5d} gqa={ratio} d={head_dim} chunk={chunk}: "
                      f"{measured / 2**20:8.1f} MiB", flush=True)
            run.write(programs=programs)
    coefficients, report = {}, {}
    for strategy, rows in programs.items():
        measured = np.array([r["measured"] for r in rows], np.float64)
        c = fit([r["terms"] for r in rows], measured, args.margin)
        coefficients[strategy] = [round(float(x), 2) for x in c]
        new = np.array([r["terms"] for r in rows]) @ np.array(coefficients[strategy])
        current = np.array([r["current"] for r in rows], np.float64)
        report[strategy] = {"programs": len(rows), "new_over_measured": [float((new / measured).min()),
                                                                         float(np.median(new / measured))],
                            "current_over_measured": [float((current / measured).min()),
                                                      float(np.median(current / measured))]}
        print(f"{strategy:9s} {len(rows)} programs; coefficients {tuple(coefficients[strategy])}; estimate / "
              f"compiled, least and median: new {report[strategy]['new_over_measured'][0]:.2f}, "
              f"{report[strategy]['new_over_measured'][1]:.2f}; current "
              f"{report[strategy]['current_over_measured'][0]:.2f}, {report[strategy]['current_over_measured'][1]:.2f}")
    return run.write(programs=programs, coefficients=coefficients, report=report)


if __name__ == "__main__":
    main()
