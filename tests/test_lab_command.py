"""``pwlab lab`` / ``pwlab serve``: the set-up checks on simulated broken environments, the
command lines they build, and one real start/stop of the lab server."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pwlab.commands import _jupyter as J
from pwlab.commands import lab, serve

GOOD_EXTS = {J.WIDGETS_MANAGER: {"version": "5.0.16"}, J.PLOTLY_RENDERER: {"version": "7.1.0"},
             J.ANYWIDGET: {"version": "0.11.0"}}
GOOD_VERSIONS = {"plotly": "7.1.0", "ipywidgets": "8.1.9", "anywidget": "0.11.0", "jupyterlab_widgets": "3.0.17"}


def versions(**over):
    table = dict(GOOD_VERSIONS, **over)
    return lambda name: table.get(name)


def without(name):
    return {k: v for k, v in GOOD_EXTS.items() if k != name}


# --- front-end extensions ---------------------------------------------------------------

def test_frontend_ok():
    assert J.frontend_problems(GOOD_EXTS, set(), versions()) == []


@pytest.mark.parametrize("missing, pip_name", [(J.WIDGETS_MANAGER, "jupyterlab_widgets"),
                                               (J.PLOTLY_RENDERER, "plotly"), (J.ANYWIDGET, "anywidget")])
def test_frontend_missing_extension_names_it_and_the_fix(missing, pip_name):
    problems = J.frontend_problems(without(missing), set(), versions(), python="/env/bin/python")
    assert len(problems) == 1
    assert missing in problems[0] and "not installed" in problems[0]
    assert f"fix: /env/bin/python -m pip install {pip_name}" in problems[0]


def test_anywidget_only_required_from_plotly_6():
    # plotly 5 shipped FigureWidget in its own extension; anywidget arrived with plotly 6.
    assert J.frontend_problems(without(J.ANYWIDGET), set(), versions(plotly="5.24.1", anywidget=None)) == []
    assert len(J.frontend_problems(without(J.ANYWIDGET), set(), versions(plotly="6.0.0"))) == 1


def test_frontend_disabled_extension():
    problems = J.frontend_problems(GOOD_EXTS, {J.PLOTLY_RENDERER}, versions(), python="py")
    assert problems == [p for p in problems if "disabled" in p] and len(problems) == 1
    assert "fix: py -m jupyter labextension enable jupyterlab-plotly" in problems[0]


def test_frontend_widget_protocol_mismatch():
    exts = dict(GOOD_EXTS, **{J.WIDGETS_MANAGER: {"version": "3.1.0"}})     # the ipywidgets 7 front end
    problems = J.frontend_problems(exts, set(), versions())
    assert len(problems) == 1 and "needs @jupyter-widgets/jupyterlab-manager 5.x" in problems[0]
    assert '"jupyterlab_widgets==3.*"' in problems[0]
    # ipywidgets 7 with that same front end is a consistent pair.
    assert J.frontend_problems(exts, set(), versions(ipywidgets="7.8.1")) == []


def test_plotly_without_anywidget_package():
    problems = J.frontend_problems(GOOD_EXTS, set(), versions(anywidget=None))
    assert len(problems) == 1 and "needs the anywidget package" in problems[0]


def test_disabled_list_or_mapping(monkeypatch):
    import jupyterlab_server.config as cfg
    monkeypatch.setattr(cfg, "get_page_config", lambda *a, **k: {"disabledExtensions": {"a": True, "b": False}})
    assert J.disabled_labextensions() == {"a"}
    monkeypatch.setattr(cfg, "get_page_config", lambda *a, **k: {"disabledExtensions": ["c"]})
    assert J.disabled_labextensions() == {"c"}


# --- kernel -----------------------------------------------------------------------------

def probe_answering(prefix, error=""):
    seen = []

    def probe(python):
        seen.append(python)
        return prefix, error
    probe.seen = seen
    return probe


def test_kernel_missing():
    problems = J.kernel_problems((None, ""), probe_answering("/x"), prefix="/env", python="/env/bin/python")
    assert problems == ["no 'python3' kernel is installed for this JupyterLab.\n"
                        "    fix: /env/bin/python -m ipykernel install --sys-prefix"]


def test_kernel_bare_python_is_the_servers_interpreter(tmp_path):
    # jupyter_client launches a bare "python" as the server's own sys.executable.
    probe = probe_answering(str(tmp_path))
    assert J.kernel_problems((["python", "-m", "ipykernel_launcher"], "/k"), probe, prefix=str(tmp_path)) == []
    assert probe.seen == [sys.executable]


def test_kernel_from_another_environment(tmp_path):
    other, mine = tmp_path / "other", tmp_path / "mine"
    other.mkdir(), mine.mkdir()
    probe = probe_answering(str(other))
    problems = J.kernel_problems(([str(other / "bin/python"), "-m", "ipykernel_launcher"], "/home/u/k/python3"),
                                 probe, prefix=str(mine), python=str(mine / "bin/python"))
    assert probe.seen == [str(other / "bin/python")]
    assert len(problems) == 1
    assert f"another environment ({other})" in problems[0] and f"JupyterLab ({mine})" in problems[0]
    assert f"fix: {mine / 'bin/python'} -m ipykernel install --sys-prefix" in problems[0]
    assert "rm -r /home/u/k/python3" in problems[0]


def test_kernel_that_cannot_import_the_lab():
    problems = J.kernel_problems((["/old/bin/python", "-m", "ipykernel_launcher"], "/k"),
                                 probe_answering(None, "missing packages: ipywidgets, pwlab"), prefix="/env")
    assert len(problems) == 1 and "missing packages: ipywidgets, pwlab" in problems[0]


def test_probe_interpreter_for_real(tmp_path):
    prefix, err = J.probe_interpreter(sys.executable, ("json",))
    assert (prefix, err) == (sys.prefix, "")
    prefix, err = J.probe_interpreter(sys.executable, ("json", "no_such_package_pwlab"))
    assert prefix is None and err.endswith("missing packages: no_such_package_pwlab")
    prefix, err = J.probe_interpreter(str(tmp_path / "no-python"))
    assert prefix is None and err


def test_this_environment_is_set_up():
    """The environment running the tests has the front ends and a kernel of its own."""
    assert J.frontend_problems() == []
    assert J.kernel_problems() == []


# --- the commands -----------------------------------------------------------------------

@pytest.fixture
def notebooks(tmp_path):
    (tmp_path / "00_welcome.ipynb").write_text("{}")
    return tmp_path


def test_lab_refuses_to_start_when_broken(monkeypatch, notebooks, capsys):
    monkeypatch.setattr(lab, "check", lambda: ["the thing is missing.\n    fix: do this"])
    monkeypatch.setattr(J, "supervise", lambda *a, **k: pytest.fail("must not start a server"))
    assert lab.main(["--notebook-dir", str(notebooks), "--no-browser"]) == 1
    err = capsys.readouterr().err
    assert "server was not started" in err and "fix: do this" in err


def test_lab_check_only(monkeypatch, notebooks, capsys):
    monkeypatch.setattr(lab, "check", lambda: [])
    monkeypatch.setattr(J, "supervise", lambda *a, **k: pytest.fail("--check starts nothing"))
    assert lab.main(["--check", "--notebook-dir", str(notebooks)]) == 0
    assert "OK" in capsys.readouterr().out


def test_lab_busy_port(monkeypatch, notebooks, capsys):
    monkeypatch.setattr(lab, "check", lambda: [])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert lab.main(["--port", str(port), "--notebook-dir", str(notebooks), "--no-browser"]) == 2
    assert f"port {port} is in use" in capsys.readouterr().err


def test_lab_starts_at_the_welcome_notebook(monkeypatch, notebooks):
    monkeypatch.setattr(lab, "check", lambda: [])
    calls = []
    monkeypatch.setattr(J, "supervise", lambda cmd, ready, url, what, **k: calls.append((cmd, url)) or 0)
    port = J.free_port()
    assert lab.main(["--port", str(port), "--notebook-dir", str(notebooks), "--no-browser",
                     "--LabApp.extra=1"]) == 0
    (cmd, url), = calls
    token = re.search(r"token=(\w+)$", url).group(1)
    assert url == f"http://127.0.0.1:{port}/lab/tree/00_welcome.ipynb?token={token}" and len(token) >= 32
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    for opt in (f"--ServerApp.root_dir={notebooks.resolve()}", f"--ServerApp.port={port}",
                "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
                "--ServerApp.open_browser=False", "--ServerApp.default_url=/lab/tree/00_welcome.ipynb",
                "--LabApp.extra=1"):
        assert opt in cmd


def test_lab_bad_arguments(notebooks, tmp_path):
    with pytest.raises(SystemExit):
        lab.main(["--bogus", "--notebook-dir", str(notebooks)])
    with pytest.raises(SystemExit):
        lab.main(["--port", "0", "--notebook-dir", str(notebooks)])
    with pytest.raises(SystemExit):
        lab.main(["--notebook-dir", str(tmp_path / "absent")])


def test_serve_arguments_and_command(monkeypatch, notebooks, tmp_path):
    with pytest.raises(SystemExit):
        serve.main([str(tmp_path / "absent.ipynb")])
    monkeypatch.setattr(serve, "check", lambda: ["broken.\n    fix: x"])
    assert serve.main([str(notebooks / "00_welcome.ipynb")]) == 1
    cmd = serve.voila_command(Path("nb.ipynb"), 8866, "127.0.0.1", "tok", False, "dark", show_code=False)
    assert cmd[:4] == [sys.executable, "-m", "voila", "nb.ipynb"]
    assert {"--VoilaConfiguration.strip_sources=True", "--Voila.token=tok", "--Voila.port=8866",
            "--VoilaConfiguration.theme=dark", "--Voila.open_browser=False"} <= set(cmd)
    assert "--VoilaConfiguration.strip_sources=False" in serve.voila_command(
        Path("nb.ipynb"), 1, "h", "t", False, "light", show_code=True)


def test_supervise_reports_exit_before_ready(capsys):
    code = J.supervise([sys.executable, "-c", "raise SystemExit(3)"], lambda: False, "http://x", "demo")
    assert code == 3 and "exited with status 3 before answering" in capsys.readouterr().err


def test_supervise_prints_url_once_ready(capsys):
    code = J.supervise([sys.executable, "-c", "raise SystemExit(0)"], lambda: True, "http://here", "demo")
    assert code == 0 and "demo is running at:\n\n    http://here" in capsys.readouterr().out


@pytest.mark.slow
def test_lab_serves_and_stops_with_its_server(notebooks):
    """A real `pwlab lab`: the printed URL answers; SIGTERM stops JupyterLab too (port freed)."""
    port = J.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pwlab.cli", "lab", "--no-browser", "--skip-checks",
                             "--port", str(port), "--notebook-dir", str(notebooks)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in proc.stdout:
            if m := re.match(r"^ {4}(http://\S+)$", line):
                url = m.group(1)
                break
        assert url and url.startswith(f"http://127.0.0.1:{port}/lab/tree/00_welcome.ipynb?token=")
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and "JupyterLab" in r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while J.port_answers(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not J.port_answers(port), "the JupyterLab server outlived `pwlab lab`"
    assert J.port_is_free(port)
