"""Every test runs on 8 simulated CPU devices (set before JAX initialises its backend).

The suite compiles the same small programs many times over (every tiny run compiles its train step,
its initialisation and its decoding step), so it shares one persistent compilation cache, new for each
session and removed after it: it changes no result, only how often XLA compiles. Subprocesses that tests
start inherit it through the environment.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ringrl-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"  # the many tiny eager compiles are cheaper to redo
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    if jax.device_count() != 8:
        raise RuntimeError(
            f"tests need 8 simulated CPU devices, found {jax.device_count()}: "
            "was JAX imported before tests/conftest.py set XLA_FLAGS?"
        )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Six 250-step episodes of cartpole's sizes (obs 5, action 1) in the ExoRL layout: the tiny runs' data."""
    from datasets import exorl
    from datasets.synthetic import random_trajectories

    root = tmp_path_factory.mktemp("exorl")
    exorl.save(root, "cartpole", "random", random_trajectories(3, [250] * 6, obs_dim=5, act_dim=1))
    return root
