"""Every job's command line: a refused flag or value is one `error: ...` line naming the flag and the value,
exit code 2 (experiments.cli.parse), while --help stays as tyro renders it."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import CommandLineError, parse, refusal_line

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("job, argv, words", [
    ("train", ["--optim.learning-rate", "abc"], ["--optim.learning-rate", "'abc'"]),
    ("train", ["--preset", "nope"], ["--preset", "nope", "unknown"]),
    ("train", ["--model.action-head", "beta"], ["'beta'", "--model.action-head", "mixture"]),
    ("train", ["--model.head", "tanh"], ["--model.head", "did you mean --model.action-head"]),
    ("train", ["--eval.num-trials", "0"], ["EvalConfig.num_trials=0"]),
    ("evaluate", ["--run", "runs/x", "--num-envs", "four"], ["--num-envs", "'four'"]),
    ("evaluate", [], ["missing --run"]),
    ("sweep", ["--trajectories", "1", "x"], ["--trajectories", "'x'"]),
    ("sweep", ["--methods", "ppo"], ["'ppo'", "--methods"]),
    ("collect", ["--out", "d", "--policy", "greedy"], ["'greedy'", "--policy"]),
    ("collect", ["--out", "d", "--episodes", "1.5"], ["--episodes", "'1.5'"]),
    ("collect", ["curves", "--seed", "s"], ["--seed", "'s'"]),
])
def test_a_refused_command_line_is_one_error_line_and_exit_code_2(job, argv, words, capsys):
    module = importlib.import_module(f"experiments.{job}")
    assert module.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and captured.out == ""
    for word in words:
        assert word in captured.err, word


def test_parse_raises_one_line_and_help_is_tyro_s_own(capsys):
    from experiments.train import TrainCommand

    with pytest.raises(CommandLineError) as refused:
        parse(TrainCommand, ["--train.steps", "many"], description="")
    assert str(refused.value) == "--train.steps: invalid literal for int() with base 10: 'many'"
    assert capsys.readouterr().err == ""  # tyro's box is not printed
    with pytest.raises(SystemExit) as helped:
        parse(TrainCommand, ["--help"], description="train")
    assert helped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--train.steps INT" in out and "--preset" in out


def test_the_command_line_of_a_job_prints_one_line_as_a_user_sees_it():
    # Another process, as a user runs it: UTF-8 output, where tyro draws its box with other characters.
    run = subprocess.run([sys.executable, "-m", "experiments.train", "--optim.learning-rate", "abc"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, encoding="utf-8",
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert run.returncode == 2, run.stderr
    assert run.stderr == "error: --optim.learning-rate: could not convert string to float: 'abc'\n"
    assert run.stdout == ""


UTF8 = """\
╭─ Unrecognized options ──────────────────────────╮
│ Unrecognized options: --model.head, nope        │
│ ─────────────────────────────────────────────── │
│ Perhaps you meant:                              │
│     --model.action-head {tanh,gaussian}         │
│         the head. (default: tanh)               │
│ ─────────────────────────────────────────────── │
│ For full helptext, run python -m x --help       │
╰─────────────────────────────────────────────────╯
"""

ASCII = """\
 Value error
 ---------------------------------------------------
  Error parsing --train.steps: invalid literal for
  int() with base 10: 'x'
  ---------------------------------------------------
  Argument helptext:
      --train.steps INT
  ---------------------------------------------------
  For full helptext, see python -m x --help

"""

REQUIRED = """\
╭─ Required options ─────────────────╮
│ Missing from python -m x:          │
│     --run PATH                     │
│         a run directory (required) │
╰────────────────────────────────────╯
"""


def test_refusal_line_reads_both_of_tyro_s_box_styles_and_keeps_any_other_text():
    assert refusal_line(UTF8) == "Unrecognized options: --model.head, nope (did you mean --model.action-head?)"
    assert refusal_line(ASCII) == "--train.steps: invalid literal for int() with base 10: 'x'"
    assert refusal_line(REQUIRED) == "missing --run (required)"
    assert refusal_line("\x1b[31musage: x\nsomething  went wrong\x1b[0m\n") == "usage: x something went wrong"
