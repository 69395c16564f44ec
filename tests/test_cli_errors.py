"""Every bad ``pwlab`` command line ends in one line on stderr naming the argument, exit status 2.

Each case runs through :func:`pwlab.cli.main` as the console script does; before these checks
several of them ended in a Python traceback (``--threads 0``, ``train --out`` a file, a NaN loss).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

import pwlab.cli as cli
from pwlab.model import PathwaysModel
from pwlab.train import Trainer


def run_bad(argv, capsys) -> str:
    """Run ``pwlab argv``; assert status 2, nothing on stdout and one line on stderr; return it."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    return lines[0]


@pytest.fixture
def notebook(tmp_path):
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return nb


# (argv, the option the message must name, what it must say was accepted)
BAD_OPTIONS = [
    (["bench", "swat", "--threads", "0"], "--threads", "must be an integer >= 1, got '0'"),
    (["bench", "swat", "--threads", "two"], "--threads", "must be an integer, got 'two'"),
    (["bench", "swat", "--sizes", "512", "0"], "--sizes", ">= 1, got '0'"),
    (["bench", "swat", "--batch", "-4"], "--batch", ">= 1, got '-4'"),
    (["bench", "swat", "--sparsity", "0.5", "1"], "--sparsity", "in [0, 1), got '1'"),
    (["bench", "swat", "--sparsity", "nan"], "--sparsity", "must be a finite number, got 'nan'"),
    (["bench", "swat", "--repeats", "0"], "--repeats", ">= 1"),
    (["bench", "swat", "--topk-period", "0"], "--topk-period", ">= 1"),
    (["bench", "moe", "--threads", "0"], "--threads", ">= 1"),
    (["bench", "moe", "--repeats", "0"], "--repeats", ">= 1"),     # was silently the default
    (["bench", "moe", "--capacity-factor", "-1"], "--capacity-factor", "must be a number > 0, got '-1'"),
    (["bench", "moe", "--capacity-factor", "inf"], "--capacity-factor", "finite"),
    (["bench", "ep", "--steps", "0"], "--steps", ">= 1"),           # was a ZeroDivisionError
    (["bench", "ep", "--warmup", "-1"], "--warmup", "must be an integer >= 0, got '-1'"),
    (["bench", "ep", "--experts", "0"], "--experts", ">= 1"),
    (["bench", "ep", "--top-k", "9", "--experts", "8"], "--top-k", "must be <= --experts=8, got 9"),
    (["bench", "ep", "--world-sizes", ","], "--world-sizes", "names no process count"),
    (["bench", "ep", "--timeout", "0"], "--timeout", "> 0"),
    (["bench", "ep", "--seed", "-1"], "--seed", "in 0 .. 2**63-1, got '-1'"),
    (["bench", "claims", "--jobs", "0"], "--jobs", ">= 1"),
    (["bench", "claims", "--seeds", "0"], "--seeds", ">= 1"),
    (["bench", "swat-accuracy", "--lr", "-0.1"], "--lr", "> 0"),
    (["bench", "swat-accuracy", "--steps", "0"], "--steps", ">= 1"),
    (["bench", "swat-accuracy", "--depth", "0"], "--depth", ">= 1"),
    (["bench", "swat-accuracy", "--seeds", "0", "-2"], "--seeds", "in 0 .. 2**63-1, got '-2'"),
    (["bench", "widgets", "--refresh", "0"], "--refresh", "> 0"),
    (["bench", "widgets", "--seconds=-inf"], "--seconds", "finite"),
    (["bench", "widgets", "--threads", "0"], "--threads", ">= 1"),
    (["train", "--threads", "0"], "--threads", ">= 1"),
    (["train", "--nproc", "0"], "--nproc", ">= 1"),
    (["train", "--steps", "-5"], "--steps", ">= 0, got '-5'"),
    (["train", "--eval-examples", "0"], "--eval-examples", ">= 1, got '0'"),   # was "accuracy 0"
    (["train", "--seed", str(2**70)], "--seed", "in 0 .. 2**63-1"),
    (["lab", "--port", "70000"], "--port", "must be in 1..65535, got '70000'"),
]


@pytest.mark.parametrize("argv, option, says", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_line_naming_the_option(argv, option, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                          # nothing may be written anywhere
    line = run_bad(argv, capsys)
    prog = "pwlab " + " ".join(argv[:2] if argv[0] == "bench" else argv[:1])
    assert line.startswith(f"{prog}: error: ") and option in line and says in line, line
    assert line.endswith(f"(see {prog} --help)")
    assert list(tmp_path.iterdir()) == []


def test_serve_bad_port(notebook, capsys):
    line = run_bad(["serve", str(notebook), "--port", "0"], capsys)
    assert line == "pwlab serve: error: argument --port: must be in 1..65535, got '0' (see pwlab serve --help)"


# --- pwlab train --out -------------------------------------------------------------------

def train(*argv: str) -> list[str]:
    return ["train", "--tasks", "wine", "--steps", "2", "--eval-examples", "8", "--no-progress", *argv]


def test_train_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    line = run_bad(train("--out", str(f)), capsys)
    assert line == f"pwlab train: error: --out {str(f)!r} is a file, not a folder"
    assert f.read_text() == "mine"


def test_train_out_below_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    line = run_bad(train("--out", str(f / "run")), capsys)
    assert line == f"pwlab train: error: --out {str(f / 'run')!r} cannot be made: {str(f)!r} is a file, not a folder"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs (unwritable even for root)")
def test_train_out_unwritable(capsys):
    line = run_bad(train("--out", "/sys/pwlab-run"), capsys)
    assert line.startswith("pwlab train: error: --out '/sys/pwlab-run' is not writable: ")
    assert not Path("/sys/pwlab-run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_train_out_in_a_read_only_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = run_bad(train("--out", str(ro / "run")), capsys)
    finally:
        ro.chmod(0o755)
    assert "is not writable: Permission denied" in line


# --- a loss that turns NaN ------------------------------------------------------------------

@pytest.fixture
def nan_at_step_3(monkeypatch):
    """The model's 3rd training forward pass gives a NaN loss for task wine (as a diverged run does)."""
    forward = PathwaysModel.forward
    calls = []

    def poisoned(self, *a, **k):
        out = forward(self, *a, **k)
        if self.training:
            calls.append(1)
            if len(calls) == 3:
                out.losses["wine"] = out.losses["wine"] * math.nan
        return out
    monkeypatch.setattr(PathwaysModel, "forward", poisoned)


def test_train_nonfinite_loss_names_the_step_and_the_option(tmp_path, capsys, nan_at_step_3):
    line = run_bad(train("--steps", "5", "--out", str(tmp_path / "run")), capsys)
    assert line == ("pwlab train: error: the loss became nan at step 3 in task 'wine'; nothing was saved "
                    "(lower the learning rate, or pass --skip-nonfinite to skip such batches)")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_skip_nonfinite_skips_that_batch(tmp_path, capsys, nan_at_step_3):
    assert cli.main(train("--steps", "5", "--out", str(tmp_path / "run"), "--skip-nonfinite")) == 0
    capsys.readouterr()
    tr = Trainer.load(tmp_path / "run" / "checkpoint.pt")
    skipped = [r for r in tr.history if r.get("skipped")]
    assert tr.config.train.skip_nonfinite is True
    assert len(skipped) == 1 and skipped[0]["nonfinite"] == "wine" and skipped[0]["step"] == 2
    assert tr.step_count == 4                       # 5 batches drawn, one skipped


def test_skip_nonfinite_on_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert cli.main(train("--out", str(out))) == 0
    seen = []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: seen.append(self.config.train.skip_nonfinite))
    resume = ["train", "--resume", str(out), "--steps", "1", "--no-progress"]
    assert cli.main([*resume, "--skip-nonfinite"]) == 0
    assert Trainer.load(out / "checkpoint.pt").config.train.skip_nonfinite is True
    assert cli.main(resume) == 0                    # not carried over from the checkpoint's run
    assert seen == [True, False]
    capsys.readouterr()


# --- the safety net in pwlab.cli.main --------------------------------------------------------

@pytest.mark.parametrize("exc, line", [
    (ValueError("rate must be > 0, got -1"), "pwlab: error: rate must be > 0, got -1"),
    (KeyError("no task named 'chess'"), "pwlab: error: no task named 'chess'"),
    (FileNotFoundError(2, "No such file or directory", "x.pt"),
     "pwlab: error: [Errno 2] No such file or directory: 'x.pt'"),
    (TypeError("a\nmulti-line\n  message"), "pwlab: error: a multi-line message"),
])
def test_user_errors_from_a_sub_command_are_one_line(monkeypatch, capsys, exc, line):
    import pwlab.commands.train as train_cmd

    def boom(argv):
        raise exc
    monkeypatch.setattr(train_cmd, "main", boom)
    monkeypatch.delenv("PWLAB_TRACEBACK", raising=False)
    assert run_bad(["train"], capsys) == line


def test_bugs_keep_their_traceback(monkeypatch, capsys):
    import pwlab.commands.train as train_cmd

    def boom(argv):
        raise RuntimeError("a bug")
    monkeypatch.setattr(train_cmd, "main", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train"])
    monkeypatch.setattr(train_cmd, "main", lambda argv: (_ for _ in ()).throw(ValueError("bad")))
    monkeypatch.setenv("PWLAB_TRACEBACK", "1")
    with pytest.raises(ValueError, match="bad"):
        cli.main(["train"])


def test_help_and_success_still_exit_0(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--skip-nonfinite" in capsys.readouterr().out
    assert cli.main(["bench", "swat", "--help"]) == 0
    assert "--threads" in capsys.readouterr().out
