"""Fuzz every ``pwlab`` sub-command: wrong types, zero/negative/huge numbers, garbage strings,
missing files and directories for files. Each ends in exit status 2 with one line on stderr
(never a traceback), or in the sub-command's own help (status 0)."""
from __future__ import annotations

import pytest

import pwlab.cli as cli
from tests.fuzz._probe import COUNTS

VALUES = ["0", "-1", "1.5", "nan", "inf", "abc", "", str(10**30), "-9" * 20]
# a huge or fractional float is a good value for a float option (a 1e30 learning rate is a run)
FLOAT_OPTIONS = ("--capacity-factor", "--lr", "--refresh", "--timeout")
# (sub-command, a numeric option); values above go to each
OPTIONS = [
    (["bench", "swat"], "--threads"), (["bench", "swat"], "--batch"), (["bench", "swat"], "--repeats"),
    (["bench", "moe"], "--threads"), (["bench", "moe"], "--capacity-factor"), (["bench", "ep"], "--steps"),
    (["bench", "ep"], "--experts"), (["bench", "ep"], "--timeout"), (["bench", "claims"], "--jobs"),
    (["bench", "swat-accuracy"], "--lr"), (["bench", "widgets"], "--refresh"), (["train"], "--steps"),
    (["train"], "--threads"), (["train"], "--nproc"), (["train"], "--eval-examples"), (["train"], "--seed"),
    (["lab"], "--port"), (["serve"], "--port"),
]


def _run(argv, capsys):
    """Run ``pwlab argv`` and tally it: a clear error is status 2 with one line naming ``names``."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(argv, names, capsys):
    code, out, err = _run(argv, capsys)
    COUNTS["probes"] += 1
    clear = code == 2 and "Traceback" not in err + out and len(err.splitlines()) == 1 \
        and any(n in err for n in names)
    COUNTS["clear_errors" if clear else "unhelpful_crashes"] += 1
    assert clear, (argv, code, out[-300:], err[-600:])


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("cmd, option", OPTIONS, ids=[" ".join(c + [o]) for c, o in OPTIONS])
def test_bad_numbers_are_one_line_naming_the_option(cmd, option, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                            # nothing may be written where the tests run
    if (option, value) in (("--steps", "0"), ("--seed", "0")):
        pytest.skip("a good value")
    if option in FLOAT_OPTIONS and value in ("1.5", str(10**30)):
        value = "-" + value
    _one_line_error(cmd + [f"{option}={value}"], [option], capsys)


@pytest.mark.parametrize("argv", [["nope"], ["bench", "nope"], ["train", "--bogus"], ["course", "nope"],
                                  ["lab", "--bogus"], ["serve", "--bogus"]], ids=str)
def test_unknown_commands_and_options(argv, capsys):
    # serve's missing notebook is named first: also one clear line
    _one_line_error(argv, [argv[-1], "notebook"], capsys)


@pytest.mark.parametrize("kind", ["missing", "directory_for_file", "file_for_directory"])
@pytest.mark.parametrize("cmd", ["serve", "course student", "course check", "course new", "train --out"])
def test_paths_that_are_missing_or_of_the_wrong_kind(cmd, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing, directory, file = tmp_path / "missing.ipynb", tmp_path / "dir", tmp_path / "file.txt"
    directory.mkdir()
    file.write_text("not json")
    target = {"missing": missing, "directory_for_file": directory, "file_for_directory": file}[kind]
    argv = cmd.split() + [str(target)]
    if cmd == "course student":
        argv.append(str(tmp_path / "out"))
    if cmd == "train --out":
        if kind != "file_for_directory":
            pytest.skip("a missing or empty --out folder is a good value (the run would start)")
        argv += ["--steps", "0"]
    if cmd == "course new" and kind == "missing":
        pytest.skip("a new notebook path is a good value")
    _one_line_error(argv, [str(target), target.name, "notebook", "--out"], capsys)
