"""The job command lines' shared parsing: ``--preset NAME`` picks a base config, every other flag overrides
one of its fields (tyro), and ``--distributed.*`` joins several processes into one JAX runtime.

``--help`` lists the presets, each with the command that runs it, and the choices of every enum-like field.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from experiments.config import ExperimentConfig
from experiments.presets import DEFAULT_PRESET, PRESETS, get_preset

PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]

PRESET_HELP = "the base config; every other flag overrides one of its fields. Presets:\n" + "\n".join(
    f"  {name}: {preset.command}" for name, preset in PRESETS.items() if not name.endswith("_tiny"))
PRESET_HELP += "\n  <name>_tiny: every preset's sibling that runs in seconds"

# A command's fields: ``config`` appears on the command line without a prefix (``--train.steps``).
ConfigArg = Annotated[ExperimentConfig, tyro.conf.arg(name="")]
PresetArg = Annotated[PresetName, tyro.conf.arg(help=PRESET_HELP)]


class JobError(RuntimeError):
    """A job refused or stopped for a reason its message explains (a busy run directory, a non-finite loss)."""


# What a job's main reports as one ``error: ...`` line and exit code 2: refusals that name what to change
# (ValueError), files and disks (OSError: missing, read-only, full) and JobError. Anything else is a bug and
# keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError, JobError)


def fail(error: BaseException) -> int:
    """Prints ``error`` as one line on stderr; returns a refused job's exit code."""
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
    """Several processes (hosts) as one JAX runtime: the same command runs in every process.

    Attributes:
      enable: call jax.distributed.initialize() first; with no other flag the cluster is detected (SLURM,
        TPU pods, Open MPI and the like).
      coordinator: host:port of process 0, where detection is not available.
      num_processes: processes in all (with coordinator).
      process_id: this process's index, 0..num_processes-1 (with coordinator). Only process 0 writes files.
      local_device_ids: the devices this process uses (None: all it sees).
    """

    enable: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def initialize(self) -> None:
        """Prepares the JAX runtime: the persistent compilation cache (``enable_compilation_cache``), then
        joins the processes (only when enabled); must run before any other JAX call."""
        enable_compilation_cache()
        if not self.enable:
            if self.coordinator is not None or self.num_processes is not None or self.process_id is not None:
                raise ValueError("--distributed.coordinator/num-processes/process-id need --distributed.enable")
            return
        explicit = (self.coordinator, self.num_processes, self.process_id)
        if any(v is not None for v in explicit) and any(v is None for v in explicit):
            raise ValueError("--distributed: give coordinator, num_processes and process_id together, or none "
                             "of them to detect the cluster")
        import jax

        jax.distributed.initialize(coordinator_address=self.coordinator, num_processes=self.num_processes,
                                   process_id=self.process_id,
                                   local_device_ids=list(self.local_device_ids) if self.local_device_ids else None)


def enable_compilation_cache() -> Path:
    """Turns on JAX's persistent compilation cache for a job, so that a rerun (or a run of the same sizes)
    loads its programs instead of compiling them again: in ``JAX_COMPILATION_CACHE_DIR`` where that is set,
    else ``$XDG_CACHE_HOME/ringrl/jax`` (``~/.cache/ringrl/jax``). Programs that compile in under half a
    second are not kept (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` overrides): they are cheaper to redo.

    Returns:
      The cache directory.
    """
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ringrl" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return Path(path)


def preset_from_argv(argv: list[str]) -> str:
    """The value of ``--preset`` in ``argv`` (``DEFAULT_PRESET`` when absent); checked against the known names."""
    name = DEFAULT_PRESET
    for i, arg in enumerate(argv):
        if arg == "--preset":
            if i + 1 >= len(argv):
                raise ValueError("--preset needs a name")
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    get_preset(name)  # an unknown name fails here, with the close matches
    return name


def prog_name(module: str) -> str:
    """What a job's usage lines call it: the console script it was started as (``ringrl-train``), else
    ``python -m <module>``; never a path into the checkout.

    Args:
      module: the job's module, e.g. experiments.train ("__main__": the one ``python -m`` runs).
    """
    script = Path(sys.argv[0]).name
    if script.startswith("ringrl-"):
        return script
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else script
    return f"python -m {module}"


def parse(command_type, argv=None, *, description: str):
    """Parses ``argv`` into ``command_type``, a dataclass with fields ``config`` (flattened into the
    command line), ``preset`` and the command's own flags; the chosen preset supplies the defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = preset_from_argv(argv)
    default = command_type(config=get_preset(name), preset=name)
    return tyro.cli(command_type, args=argv, default=default, description=description,
                    prog=prog_name(command_type.__module__))
