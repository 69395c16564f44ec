"""``pwlab lab`` / ``pwlab serve``: the set-up checks on simulated broken environments, the
command lines they build, and one real start/stop of the lab server."""
from __future__ import annotations

import http.client
import json
import os
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
    monkeypatch.setattr(J, "supervise",
                        lambda cmd, ready, url, what, env=None, **k: calls.append((cmd, url, env)) or 0)
    monkeypatch.setenv("JUPYTER_TOKEN_FILE", "/somewhere/else")
    port = J.free_port()
    assert lab.main(["--port", str(port), "--notebook-dir", str(notebooks), "--no-browser",
                     "--LabApp.extra=1"]) == 0
    (cmd, url, env), = calls
    token = re.search(r"token=(\w+)$", url).group(1)
    assert url == f"http://127.0.0.1:{port}/lab/tree/00_welcome.ipynb?token={token}" and len(token) >= 32
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    for opt in (f"--ServerApp.root_dir={notebooks.resolve()}", f"--ServerApp.port={port}",
                "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
                "--ServerApp.open_browser=False", "--ServerApp.default_url=/lab/tree/00_welcome.ipynb",
                "--LabApp.extra=1"):
        assert opt in cmd
    # the secret goes in the environment (readable by its owner only), never on the command line
    assert not any(token in a for a in cmd) and not any("token" in a.lower() for a in cmd)
    assert env["JUPYTER_TOKEN"] == token and "JUPYTER_TOKEN_FILE" not in env
    assert env["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize("uid", [0, 1000])
def test_allow_root_only_as_root_and_said_on_stderr(monkeypatch, notebooks, capsys, uid):
    monkeypatch.setattr(lab, "check", lambda: [])
    monkeypatch.setattr(serve, "check", lambda: [])
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    cmds = []
    monkeypatch.setattr(J, "supervise", lambda cmd, *a, **k: cmds.append(cmd) or 0)
    assert lab.main(["--port", str(J.free_port()), "--notebook-dir", str(notebooks), "--no-browser"]) == 0
    err = capsys.readouterr().err
    assert ("--ServerApp.allow_root=True" in cmds[0]) == (uid == 0)
    assert [a for a in cmds[0] if "allow_root=" in a] == (["--ServerApp.allow_root=True"] if uid == 0 else [])
    if uid == 0:
        assert err.count("\n") == 1 and "running as root" in err and "--ServerApp.allow_root=True" in err
    else:
        assert err == ""
    assert serve.main([str(notebooks / "00_welcome.ipynb"), "--port", str(J.free_port()), "--no-browser"]) == 0
    out, err = capsys.readouterr()
    assert "each visit runs 00_welcome.ipynb top to bottom" in out     # why the first page takes a while
    assert not any("allow_root=" in a for a in cmds[1])     # Voila has no such switch
    assert (err == "pwlab serve: running as root, so every visitor's kernel runs as root\n") == (uid == 0)
    assert (err == "") == (uid != 0)


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
    cmd = serve.voila_command(Path("nb.ipynb"), 8866, "127.0.0.1", False, "dark", show_code=False)
    assert cmd[:4] == [sys.executable, "-m", "voila", "nb.ipynb"]
    # auto_token: Voila takes the token from JUPYTER_TOKEN; without it Voila would serve with none
    assert {"--VoilaConfiguration.strip_sources=True", "--Voila.auto_token=True", "--Voila.port=8866",
            "--VoilaConfiguration.theme=dark", "--Voila.open_browser=False"} <= set(cmd)
    assert not any(a.startswith("--Voila.token") for a in cmd)
    assert "--VoilaConfiguration.strip_sources=False" in serve.voila_command(
        Path("nb.ipynb"), 1, "h", False, "light", show_code=True)
    calls = []
    monkeypatch.setattr(serve, "check", lambda: [])
    monkeypatch.setattr(J, "supervise", lambda cmd, ready, url, what, env=None: calls.append((cmd, url, env)) or 0)
    assert serve.main([str(notebooks / "00_welcome.ipynb"), "--port", str(J.free_port()), "--no-browser"]) == 0
    (cmd, url, env), = calls
    token = re.search(r"\?token=(\w+)$", url).group(1)
    assert len(token) >= 32 and env["JUPYTER_TOKEN"] == token and not any(token in a for a in cmd)


def test_token_env():
    env = J.token_env("abc", {"PATH": "/bin", "JUPYTER_TOKEN": "old", "JUPYTER_TOKEN_FILE": "/f"})
    assert env == {"PATH": "/bin", "JUPYTER_TOKEN": "abc"}


def test_supervise_reports_exit_before_ready(capsys):
    code = J.supervise([sys.executable, "-c", "raise SystemExit(3)"], lambda: False, "http://x", "demo")
    assert code == 3 and "exited with status 3 before answering" in capsys.readouterr().err


def test_supervise_prints_url_once_ready(capsys):
    code = J.supervise([sys.executable, "-c", "raise SystemExit(0)"], lambda: True, "http://here", "demo")
    assert code == 0 and "demo is running at:\n\n    http://here" in capsys.readouterr().out


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc: the parent is field 4 of /proc/N/stat)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue                                     # gone meanwhile
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        found += kids
        frontier = kids
    return found


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _get(port: int, path: str) -> tuple[int, str | None]:
    """(status, Location) of one GET, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("Location")
    finally:
        conn.close()


def _body(port: int, path: str) -> str:
    """The text of one GET (Voila streams the page while the notebook runs; read to the end)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode("utf-8", "replace")
    finally:
        conn.close()


def _start_until_url(argv: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "pwlab.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if m := re.match(r"^ {4}(http://\S+)$", line):
            return proc, m.group(1)
    proc.wait(timeout=60)
    pytest.fail(f"no URL printed; exit status {proc.returncode}")


def _assert_no_token_in_argv(proc: subprocess.Popen, token: str, server: str) -> None:
    """The server is running below ``proc``, and no process of the tree has the token in argv."""
    tree = [proc.pid, *_descendants(proc.pid)]
    cmdlines = {pid: _cmdline(pid) for pid in tree if Path(f"/proc/{pid}").exists()}
    assert any(f"-m {server}" in c for c in cmdlines.values()), cmdlines     # the child was found
    assert not [c for c in cmdlines.values() if token in c], "the token is readable in a command line"


def _stop(proc: subprocess.Popen, port: int) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while J.port_answers(port) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.slow
def test_lab_serves_and_stops_with_its_server(notebooks):
    """A real `pwlab lab`: the printed URL answers, the token is on no command line yet still
    required; SIGTERM stops JupyterLab too (port freed)."""
    port = J.free_port()
    proc, url = _start_until_url(["lab", "--no-browser", "--skip-checks", "--port", str(port),
                                  "--notebook-dir", str(notebooks)])
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/lab/tree/00_welcome.ipynb?token=")
        token = url.rsplit("=", 1)[1]
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and "JupyterLab" in r.read().decode()
        _assert_no_token_in_argv(proc, token, "jupyterlab")
        assert _get(port, "/api/status")[0] == 403
        assert _get(port, "/api/status?token=" + "0" * len(token))[0] == 403
        assert _get(port, f"/api/status?token={token}")[0] == 200
        assert _get(port, "/api/contents")[0] == 403
        # a kernel the server starts does not inherit the token in its environment
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels?token={token}", data=b"{}",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 201
        deadline, kernels = time.monotonic() + 60, []
        while not kernels and time.monotonic() < deadline:
            kernels = [pid for pid in _descendants(proc.pid) if "ipykernel" in _cmdline(pid)]
            time.sleep(0.2)
        assert kernels, "no kernel process started"
        for pid in kernels:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            assert token.encode() not in env and b"JUPYTER_TOKEN=" not in env
    finally:
        _stop(proc, port)
    assert not J.port_answers(port), "the JupyterLab server outlived `pwlab lab`"
    assert J.port_is_free(port)


@pytest.mark.slow
def test_serve_token_required_and_not_in_argv(tmp_path):
    """A real `pwlab serve`: the token is on no command line, a visit without it goes to the
    login page, one with it gets the dashboard; SIGTERM stops Voila too."""
    nb = tmp_path / "empty.ipynb"
    nb.write_text(json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}))
    port = J.free_port()
    proc, url = _start_until_url(["serve", str(nb), "--no-browser", "--skip-checks", "--port", str(port)])
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        token = url.rsplit("=", 1)[1]
        _assert_no_token_in_argv(proc, token, "voila")
        status, where = _get(port, "/")
        assert status == 302 and where.startswith("/login")
        assert _get(port, "/?token=" + "0" * len(token))[0] == 302
        assert _get(port, f"/?token={token}")[0] == 200
        page = _body(port, f"/?token={token}")
        external = re.findall(r'<(?:link|script)[^>]+(?:href|src)="(https?://[^"]+)"', page)
        assert "jp-Notebook" in page or "rendered_cells" in page, page[:300]
        assert not external, f"the dashboard page loads from outside the machine: {external}"
    finally:
        _stop(proc, port)
    assert not J.port_answers(port), "the Voila server outlived `pwlab serve`"
