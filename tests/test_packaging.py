"""Packaging a newcomer meets first: the licence, the console scripts, usage lines without the checkout's path,
`collect --help` without Flax, and one clear message where HuggingFace `datasets` shadows ringrl's."""

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_licence_and_console_scripts_are_what_pyproject_says():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    scripts = project["scripts"]
    assert sorted(scripts) == ["ringrl-collect", "ringrl-evaluate", "ringrl-sweep", "ringrl-train"]
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == f"experiments.{name.removeprefix('ringrl-')}"
        assert callable(getattr(importlib.import_module(module), function))
    assert "REFERENCE.md" not in (ROOT / "pyproject.toml").read_text()  # a reason that lives in the repository


@pytest.mark.parametrize("job", ["train", "evaluate", "sweep", "collect"])
def test_usage_lines_never_print_the_checkouts_path(job, capsys, monkeypatch):
    module = importlib.import_module(f"experiments.{job}")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "experiments" / f"{job}.py")])  # as `python -m` sets it
    with pytest.raises(SystemExit):
        module.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m experiments.{job} ") and str(ROOT) not in out
    monkeypatch.setattr(sys, "argv", [f"/somewhere/bin/ringrl-{job}"])  # as the console script sets it
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: ringrl-{job} ")


def test_collect_help_imports_no_flax():
    code = ("import sys\nfrom experiments import collect\ntry:\n    collect.main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'flax', 'jax', 'optax'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_huggingface_datasets_first_on_the_path_is_named_with_the_fix(tmp_path):
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '3.0.0'  # HuggingFace's, as far as ringrl can tell\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]))
    out = subprocess.run([sys.executable, "-m", "experiments.train", "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "HuggingFace `datasets`" in last and "separate virtual environment" in last and str(fake) in last
