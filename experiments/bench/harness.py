"""What every benchmark shares: command line, simulated devices, mesh, timing, machine record, JSON output.

A benchmark builds its parser with :func:`parser` (``--out`` defaulting to ``bench_results/<name>.json``,
``--tiny`` for a smoke run, ``--devices`` where it runs on simulated CPU devices), then calls
:func:`start`, which applies the tiny sizes, asks for the devices before JAX initialises its backend and
records the machine. ``Run.write`` stores the config, the machine and the sections measured so far in one
JSON file, atomically, so a benchmark may write after every section.

Timing (:func:`time_round_robin`, :func:`median_seconds`) warms every call up first, then keeps the median
of the timed repeats, each blocked on until its result is ready. The cores of a shared machine are noisy:
the load average is recorded when a run starts and when it writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets.atomic import atomic_path

RESULTS = Path("bench_results")
_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def parser(name: str, doc: str, *, devices: int | None = None) -> argparse.ArgumentParser:
    """The arguments every benchmark takes; ``devices`` (a default count) adds ``--devices``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.bench.{name}", description=doc.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help="JSON file to write")
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test sizes that run in seconds on a laptop CPU (the figures mean nothing)")
    if devices is not None:
        p.add_argument("--devices", type=int, default=devices,
                       help="simulated CPU devices (set before JAX initialises its backend)")
    return p


@dataclasses.dataclass
class Run:
    """One benchmark run: its name, parsed arguments, devices (when it asked for some) and machine."""

    name: str
    args: argparse.Namespace
    machine: dict
    devices: list | None = None

    def mesh(self):
        """A one-axis ring mesh ("sp") over this run's devices."""
        from ring import make_mesh

        return make_mesh("sp=-1", self.devices)

    def write(self, **sections) -> dict:
        """Writes config, machine and ``sections`` to ``args.out`` atomically; returns what it wrote."""
        result = {"benchmark": self.name, "config": config(self.args),
                  "machine": {**self.machine, "load_average_at_write": _load_average()}, **sections}
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {out}", flush=True)
        return result


def start(name: str, p: argparse.ArgumentParser, argv, *, tiny: dict | None = None, uses_jax: bool = True) -> Run:
    """Parses ``argv``; with ``--tiny`` overrides the arguments in ``tiny``; sets up devices; records the machine.

    With a ``--devices`` argument, that many simulated CPU devices are requested before JAX initialises
    (if JAX already runs with at least that many, as under the tests, they are used as they are).
    """
    args = p.parse_args(argv)
    if args.tiny:
        args = tiny_args(args, tiny or {})
    devices = use_devices(args.devices) if getattr(args, "devices", None) is not None else None
    return Run(name, args, machine(with_jax=uses_jax), devices)


def tiny_args(args: argparse.Namespace, tiny: dict) -> argparse.Namespace:
    """``args`` with the smoke-test sizes ``tiny`` (and ``tiny=True``)."""
    return argparse.Namespace(**{**vars(args), **tiny, "tiny": True})


def use_devices(count: int) -> list:
    """The first ``count`` devices, asking XLA for ``count`` simulated CPU devices if JAX has not started."""
    if count < 1:
        raise SystemExit(f"--devices must be positive, got {count}")
    flags = _DEVICE_FLAG.sub("", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    import jax

    devices = jax.devices()
    if len(devices) < count:
        raise SystemExit(f"--devices {count}: JAX already runs with {len(devices)} devices ({devices[0].platform}); "
                         "start a fresh process")
    return devices[:count]


def config(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not every platform has it
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(*, with_jax: bool = True) -> dict:
    """Where and when the figures were taken: CPU, load, Python and, ``with_jax``, JAX and its devices."""
    record = {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
              "load_average": _load_average(), "python": platform.python_version()}
    if with_jax:
        import jax
        import jaxlib

        devices = jax.devices()
        record |= {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
                   "device_kind": devices[0].device_kind, "device_count": len(devices),
                   "xla_flags": os.environ.get("XLA_FLAGS", "")}
    return record


def time_round_robin(calls: dict[str, Callable[[], Any]], repeats: int, *, warmup: int = 1,
                     after: Callable[[str, Any], None] | None = None) -> dict[str, float]:
    """Median seconds of each call, blocked on until its result is ready.

    Every call runs ``warmup`` times untimed (compilation, caches), then the calls take turns for
    ``repeats`` rounds, so that background load on a shared machine falls on all of them alike.
    ``after(name, result)``, when given, runs untimed after each call (e.g. feeding a decoder its action).
    """
    import jax

    if repeats < 1:
        raise ValueError(f"repeats must be positive, got {repeats}")
    times = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            begin = time.perf_counter()
            result = jax.block_until_ready(call())
            seconds = time.perf_counter() - begin
            if round_ >= warmup:
                times[name].append(seconds)
            if after is not None:
                after(name, result)
    return {name: statistics.median(values) for name, values in times.items()}


def median_seconds(call: Callable[[], Any], repeats: int, *, warmup: int = 1,
                   after: Callable[[Any], None] | None = None) -> float:
    """Median seconds of ``call()`` over ``repeats`` timed runs after ``warmup`` untimed ones."""
    hook = None if after is None else (lambda _, result: after(result))
    return time_round_robin({"call": call}, repeats, warmup=warmup, after=hook)["call"]
