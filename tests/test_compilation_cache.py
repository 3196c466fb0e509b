"""The jobs' persistent compilation cache: under the user's cache directory unless JAX_COMPILATION_CACHE_DIR
says otherwise, and programs really land there (a rerun loads them instead of compiling)."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import jax, jax.numpy as jnp
from experiments.cli import enable_compilation_cache
print(enable_compilation_cache())
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()
"""


@pytest.mark.parametrize("explicit", [False, True])
def test_jobs_cache_compiled_programs_in_the_users_cache_or_the_one_named(tmp_path, explicit):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    if explicit:
        env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")
    expected = tmp_path / "mine" if explicit else tmp_path / "xdg" / "ringrl" / "jax"
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(expected)
    assert any(expected.iterdir())  # the program was written to the cache
