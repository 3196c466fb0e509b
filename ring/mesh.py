"""The project's one mesh: axes ("dp", "fsdp", "tp", "sp") sized from a spec string."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("dp", "fsdp", "tp", "sp")


def parse_mesh_spec(spec: str, num_devices: int) -> dict[str, int]:
    """Axis sizes from ``"dp=2,sp=4"``-style text; omitted axes are 1 and one axis may be -1 (the rest).

    Raises:
      ValueError: an unknown axis, a malformed entry, two -1 axes, or sizes whose product is not
        ``num_devices``.
    """
    sizes = dict.fromkeys(AXES, 1)
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, sep, value = entry.partition("=")
        if not sep or name.strip() not in AXES:
            raise ValueError(f"mesh spec entry {entry!r} in {spec!r} must be AXIS=SIZE with AXIS in {AXES}")
        try:
            sizes[name.strip()] = int(value)
        except ValueError:
            raise ValueError(f"mesh spec entry {entry!r}: size {value!r} is not an integer") from None
    rest = [name for name, size in sizes.items() if size == -1]
    if len(rest) > 1:
        raise ValueError(f"mesh spec {spec!r}: only one axis may be -1, got {rest}")
    if any(size == 0 or size < -1 for size in sizes.values()):
        raise ValueError(f"mesh spec {spec!r}: sizes must be positive or -1")
    known = math.prod(size for size in sizes.values() if size != -1)
    if rest:
        if num_devices % known:
            raise ValueError(f"mesh spec {spec!r}: {num_devices} devices do not divide by {known}")
        sizes[rest[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"mesh spec {spec!r} has {math.prod(sizes.values())} devices, but {num_devices} are available")
    return sizes


def make_mesh(spec: str = "sp=-1", devices=None) -> Mesh:
    """A Mesh with axes ("dp", "fsdp", "tp", "sp") and Auto axis types, sized by :func:`parse_mesh_spec`."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = parse_mesh_spec(spec, len(devices))
    grid = np.asarray(devices).reshape([sizes[name] for name in AXES])
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    return Mesh(grid, AXES, axis_types=auto)
