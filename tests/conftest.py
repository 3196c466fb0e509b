"""Every test runs on 8 simulated CPU devices (set before JAX initialises its backend)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")

import jax  # noqa: E402


def pytest_configure(config):
    if jax.device_count() != 8:
        raise RuntimeError(
            f"tests need 8 simulated CPU devices, found {jax.device_count()}: "
            "was JAX imported before tests/conftest.py set XLA_FLAGS?"
        )
