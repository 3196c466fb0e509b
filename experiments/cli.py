"""The job command lines' shared parsing: ``--preset NAME`` picks a base config, every other flag overrides
one of its fields (tyro), and ``--distributed.*`` joins several processes into one JAX runtime.

``--help`` lists the presets, each with the command that runs it, and the choices of every enum-like field.
A command line that tyro refuses (a value of the wrong type, an unknown choice or flag, a value a config
refuses) becomes one ``CommandLineError``, which a job prints as one ``error: ...`` line (``fail``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
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


class CommandLineError(ValueError):
    """A command line refused by its parser: the flag, the value and why, in one line."""


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
                raise CommandLineError("--preset needs a name")
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    try:
        get_preset(name)  # an unknown name fails here, with the close matches
    except ValueError as error:
        raise CommandLineError(f"--preset {name}: {error}") from None
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


def parse(command_type, argv=None, *, description: str, prog: str | None = None):
    """Parses ``argv`` (default: ``sys.argv[1:]``) into ``command_type``, a dataclass. A command with the
    fields ``config`` (flattened into the command line) and ``preset`` takes its defaults from the chosen preset.

    Args:
      description: the first line of ``--help``.
      prog: the job's name in its usage lines (default: ``prog_name`` of ``command_type``'s module).

    Raises:
      CommandLineError: a refused command line, in one line. ``--help`` prints tyro's help and exits 0.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    default = None
    if {"config", "preset"} <= {field.name for field in dataclasses.fields(command_type)}:
        name = preset_from_argv(argv)
        default = command_type(config=get_preset(name), preset=name)
    options = dict(description=description, prog=prog or prog_name(command_type.__module__))
    if default is not None:
        options["default"] = default
    if "-h" in argv or "--help" in argv:  # help as tyro renders it
        return tyro.cli(command_type, args=argv, **options)
    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused), _unwrapped():
            command = tyro.cli(command_type, args=argv, **options)
    except SystemExit as exited:
        if exited.code:
            raise CommandLineError(refusal_line(refused.getvalue())) from None
        raise
    sys.stderr.write(refused.getvalue())  # what tyro says of a command line it accepts (warnings)
    return command


@contextlib.contextmanager
def _unwrapped():
    """A terminal wide enough that tyro wraps no line of its message (its width follows ``COLUMNS``)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


_BOX_EDGE = re.compile(r"^[╭╰]─*(?: (.*?) )?─*[╮╯]$")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def refusal_line(text: str) -> str:
    """tyro's refusal, a titled box of sections (the message, then help or suggestions) drawn in UTF-8 or
    ASCII (where stdout is not UTF-8), as one line: the message, with the flags tyro suggests for an
    unrecognised one. Text in any other shape is joined as it is.

    Args:
      text: what tyro printed on stderr.
    """
    title, sections = None, [[]]
    for raw in _COLOUR.sub("", text).splitlines():
        line = raw.strip()
        if edge := _BOX_EDGE.match(line):
            title = (edge.group(1) or "") if title is None else title
            continue
        row = line.removeprefix("│").removesuffix("│").strip()
        if row and set(row) <= {"─", "-"}:
            sections.append([])
        elif row:
            sections[-1].append(row)
    if title is None and len(sections) > 1 and len(sections[0]) == 1:  # ASCII: the title, then a rule
        title, sections = sections[0][0], sections[1:]
    first = sections[0]
    if title == "Required options":
        missing = [row.split()[0] for row in first if row.startswith("-")]
        return "missing " + ", ".join(missing) + " (required)" if missing else " ".join(first)
    message = " ".join(" ".join(first).split())
    message = re.sub(r"^Error parsing (-\S+):", r"\1:", message)  # "--optim.learning-rate: could not ..."
    message = re.sub(r"^Error parsing [^-\s]\S*: ", "", message)  # a config's own refusal names its field
    suggested = [row.split()[0] for section in sections[1:] if section and "meant" in section[0]
                 for row in section[1:] if row.startswith("--")]
    if suggested:
        message += f" (did you mean {', '.join(suggested)}?)"
    return message or " ".join(" ".join(text.split()).split())
