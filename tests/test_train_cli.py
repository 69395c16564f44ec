"""``pwlab train``: outputs, resume, bad input, and the tiny preset's accuracy on every task."""
from __future__ import annotations

import re

import pytest
import torch

import pwlab.tasks as tasks
from pwlab.cli import main as pwlab
from pwlab.commands.train import main
from pwlab.train import Trainer


def _table(text: str) -> dict[str, tuple[str, float, float]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\s+(accuracy|mse)\s+([\d.]+)\s+([\d.]+)$", line.strip())
        if m:
            rows[m.group(1)] = (m.group(2), float(m.group(3)), float(m.group(4)))
    return rows


def test_train_writes_checkpoint_and_self_contained_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert pwlab(["train", "--preset", "tiny", "--tasks", "wine,mmoe_a", "--steps", "4", "--out", str(out),
                  "--no-progress"]) == 0
    text = capsys.readouterr().out
    rows = _table(text)
    assert set(rows) == {"wine", "mmoe_a"} and rows["wine"][0] == "accuracy" and rows["mmoe_a"][0] == "mse"
    assert rows["wine"][2] == pytest.approx(tasks.chance(tasks.get("wine")), abs=1e-3)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "report.html"]
    html = (out / "report.html").read_text()
    # plotly.js inline exactly once, nothing fetched from elsewhere
    assert len(re.findall(r"<script>/\*\*\n\* plotly\.js v\d", html)) == 1
    assert not re.search(r"<script[^>]+src=", html)
    assert "Plotly.newPlot" in html and "wine" in html
    tr = Trainer.load(out / "checkpoint.pt")
    assert tr.step_count == 4 and [t.name for t in tr.tasks] == ["wine", "mmoe_a"]


def test_resume_continues_the_same_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--tasks", "wine,breast_cancer", "--no-progress", "--eval-examples", "10"]
    assert main(["--steps", "5", "--out", str(a), *common]) == 0
    assert main(["--steps", "3", "--out", str(b), *common]) == 0
    assert main(["--resume", str(b), "--steps", "2", "--no-progress", "--eval-examples", "10"]) == 0
    capsys.readouterr()
    ta, tb = Trainer.load(a / "checkpoint.pt"), Trainer.load(b / "checkpoint.pt")
    assert tb.step_count == 5
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h if not r.get("eval")]
    assert strip(ta.history) == strip(tb.history)
    assert all(torch.equal(x, y) for x, y in zip(ta.model.state_dict().values(), tb.model.state_dict().values()))


@pytest.mark.parametrize("argv,match", [
    (["--preset", "huge"], "preset must be one of 'tiny', 'small'"),
    (["--tasks", "wine,chess"], r"unknown task\(s\) \['chess'\]; known tasks: all, digits"),
    (["--router", "best"], "router must be one of 'topk'"),
    (["--steps", "-1"], "argument --steps: must be an integer >= 0, got '-1'"),
])
def test_bad_names_list_the_known_ones(tmp_path, capsys, argv, match):
    assert pwlab(["train", *argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1 and err.startswith("pwlab train: error: ")
    assert not (tmp_path / "x").exists()


def test_bad_resume_folders_are_refused_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["--resume", str(tmp_path / "junk"), "--no-progress"]) == 2
    assert "not a readable pwlab checkpoint" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "junk").iterdir()] == ["checkpoint.pt"]
    assert (tmp_path / "junk" / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    assert main(["--resume", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "junk"), "--preset", "tiny"]) == 2
    assert "cannot be combined with --resume" in capsys.readouterr().err


def _margin_ok(metric: str, score: float, chance: float) -> bool:
    # the learnability suite's margins: accuracy >= chance + 0.3 (+0.25 when chance >= 0.5),
    # MSE <= half the test variance
    if metric == "mse":
        return score <= 0.5 * chance
    return score >= chance + (0.25 if chance >= 0.5 else 0.3)


@pytest.mark.slow
def test_tiny_preset_beats_chance_on_every_task_in_300_steps(tmp_path, capsys):
    assert main(["--preset", "tiny", "--tasks", "all", "--steps", "300", "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    rows = _table(text)
    print(text)
    assert set(rows) == set(tasks.names())
    failing = {t: r for t, r in rows.items() if not _margin_ok(*r)}
    assert not failing, f"tasks not beating chance by the margin: {failing}"


@pytest.mark.browser
def test_report_renders_offline_in_headless_chromium(tmp_path, capsys):
    import os
    import shutil
    chromium = os.environ.get("PWLAB_CHROMIUM", "/usr/bin/chromium")
    if not shutil.which(chromium):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"no Chromium at {chromium}")
        pytest.skip("install Debian's chromium to run this: sudo apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    assert main(["--tasks", "wine,digits", "--steps", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    capsys.readouterr()
    requests, errors = [], []

    def render() -> int:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.on("request", lambda r: requests.append(r.url))
                # no network at all: every request that is not the file itself is refused
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                           else route.abort())
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto((tmp_path / "report.html").as_uri())
                page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 6",
                                       timeout=60_000)
                return page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            finally:
                browser.close()

    # Playwright's sync API refuses to run where an event loop is running; a fresh thread has none
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        plots = pool.submit(render).result()
    assert plots == 6 and not errors
    assert all(u.startswith("file:") for u in requests)


def test_nproc_hands_the_run_to_torch_distributed(monkeypatch):
    import subprocess

    from pwlab.commands import train as cmd
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda c, env=None: calls.append(c) or 0)
    assert cmd.main(["--preset", "tiny", "--steps", "7", "--nproc", "3", "--seed", "2"]) == 0
    c, = calls
    assert c[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3"]
    assert c[5:7] == ["-m", "pwlab.distributed.train"]
    assert c[c.index("--steps") + 1] == "7" and c[c.index("--seed") + 1] == "2"
    assert cmd.main(["--nproc", "2", "--out", "somewhere"]) == 2       # no checkpoint on that path
    assert cmd.main(["--nproc", "2", "--skip-nonfinite"]) == 2          # not on that path either
    with pytest.raises(SystemExit) as e:
        cmd.main(["--nproc", "0"])
    assert e.value.code == 2
    assert len(calls) == 1                                              # only the first one ran


# --- another run's output is never replaced without asking ----------------------------------

def _run(out, *more):
    return ["train", "--tasks", "wine", "--no-progress", "--eval-examples", "8", "--out", str(out), *more]


def test_out_holding_another_run_is_refused_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert pwlab(_run(out, "--steps", "3")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("refused runs must not train"))
    assert pwlab(_run(out, "--steps", "2")) == 2
    err = capsys.readouterr().err
    assert err == (f"pwlab train: error: --out {str(out)!r} holds another run (checkpoint.pt, report.html); "
                   f"continue it with --resume {str(out)!r}, or pass --force to replace it\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_report_alone_counts_as_a_run(tmp_path, capsys):
    (tmp_path / "report.html").write_text("<html>an earlier run</html>")
    assert pwlab(_run(tmp_path, "--steps", "1")) == 2
    assert "holds another run (report.html)" in capsys.readouterr().err
    assert (tmp_path / "report.html").read_text() == "<html>an earlier run</html>"


def test_force_replaces_and_resume_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert pwlab(_run(out, "--steps", "3")) == 0
    assert pwlab(_run(out, "--steps", "2", "--force")) == 0
    assert Trainer.load(out / "checkpoint.pt").step_count == 2          # a new run of 2 steps
    # --resume into its own folder (named again with --out, or not) continues that run
    assert pwlab(["train", "--resume", str(out), "--out", str(out), "--steps", "1", "--no-progress",
                  "--eval-examples", "8"]) == 0
    assert pwlab(["train", "--resume", str(out), "--steps", "1", "--no-progress", "--eval-examples", "8"]) == 0
    assert Trainer.load(out / "checkpoint.pt").step_count == 4
    capsys.readouterr()


def test_resume_into_a_folder_holding_a_third_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert pwlab(_run(a, "--steps", "3")) == 0
    assert pwlab(_run(b, "--steps", "1")) == 0
    resume_a_into_b = ["train", "--resume", str(a), "--out", str(b), "--steps", "1", "--no-progress",
                       "--eval-examples", "8"]
    capsys.readouterr()
    assert pwlab(resume_a_into_b) == 2
    assert f"--out {str(b)!r} holds another run" in capsys.readouterr().err
    assert Trainer.load(b / "checkpoint.pt").step_count == 1
    assert pwlab([*resume_a_into_b, "--force"]) == 0
    assert Trainer.load(b / "checkpoint.pt").step_count == 4 and Trainer.load(a / "checkpoint.pt").step_count == 3
    # an empty folder, or one with other files, is no run
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert pwlab(_run(tmp_path / "c", "--steps", "1")) == 0
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"
    capsys.readouterr()
