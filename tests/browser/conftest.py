"""Fixtures of the browser tests: a real JupyterLab (started by ``pwlab lab``), Voila (``pwlab
serve``) and headless Debian Chromium driven by Playwright.

Isolation: the servers serve a temporary copy of the notebooks (a test never writes into the
repository), with temporary Jupyter config/runtime/settings/workspace folders; every test gets
a fresh Chromium profile (``--user-data-dir``) and its own JupyterLab workspace, and its
kernels are shut down afterwards. Servers are stopped in teardown, always.

Without Chromium the tests skip, saying how to enable them; under CI (CI=true) that is a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from _lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, shoot

# The fixture notebooks are opened by the browser tests; nbval must not run them on its own.
collect_ignore_glob = ["fixtures/*"]

FIXTURES = Path(__file__).parent / "fixtures"
ENABLE = ("install Debian's chromium to run them: sudo apt-get install chromium "
          "(Playwright drives /usr/bin/chromium; no browser is ever downloaded)")

# JupyterLab user settings for the tests: no news/update pop-ups over the page, no autosave
# (the tests save explicitly), every cell rendered (no windowing), so counts are complete.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so fixtures can screenshot failures in teardown.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="module")
def chromium():
    """Playwright's Chromium type, bound to Debian's browser; skip (or fail in CI) without it.

    Module-scoped, so Playwright's sync driver never outlives the browser tests' modules and
    the rest of the run (nbval, unit tests) shares nothing with it."""
    problem = None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problem = f"headless Chromium not found at {CHROMIUM}: {ENABLE}"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            problem = "Playwright for Python is not installed: pip install -e '.[dev]'"
    if problem:
        if _in_ci():
            pytest.fail(f"browser tests cannot run under CI: {problem}")
        pytest.skip(f"browser tests skipped: {problem}")
    with sync_playwright() as p:
        yield p.chromium


class Server:
    """A ``pwlab lab`` or ``pwlab serve`` process, its printed URL, stopped by :meth:`stop`."""

    def __init__(self, argv: list[str], env: dict, log: Path, timeout_s: float = 180.0):
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "pwlab.cli", *argv], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        self.url = None
        while self.url is None:
            m = re.search(r"^ {4}(http://\S+)$", log.read_text(errors="replace"), re.M)
            if m:
                self.url = m.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"`pwlab {' '.join(argv)}` did not print its URL; log:\n{self.tail()}")
            else:
                time.sleep(0.25)
        self.base = re.match(r"(http://[^/]+)", self.url).group(1)
        self.token = re.search(r"token=(\w+)", self.url).group(1)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - localhost
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for k in self.api("GET", "/api/kernels") or []:
            try:
                self.api("DELETE", f"/api/kernels/{k['id']}")
            except OSError:
                pass

    def stop(self) -> None:
        # SIGTERM reaches `pwlab`, which stops the Jupyter server it supervises.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def _isolated_env(home: Path) -> dict:
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                     ("IPYTHONDIR", "ipython")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    for rel, data in LAB_SETTINGS.items():
        f = home / "settings" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(data))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory) -> Path:
    """A copy of notebooks/, assets/ and the fixture notebooks: what the servers serve."""
    root = tmp_path_factory.mktemp("lab-root")
    for name in ("notebooks", "assets"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(FIXTURES, root / "fixtures")
    return root


@pytest.fixture(scope="module")
def lab(chromium, lab_root, tmp_path_factory):
    """JupyterLab as ``pwlab lab --no-browser`` starts it (set-up checks included)."""
    home = tmp_path_factory.mktemp("jupyter-home")
    from pwlab.commands._jupyter import free_port
    server = Server(["lab", "--no-browser", "--port", str(free_port()), "--notebook-dir", str(lab_root)],
                    _isolated_env(home), home / "lab.log")
    server.root = lab_root
    yield server
    server.stop()


@pytest.fixture
def serve(chromium, lab_root, tmp_path_factory):
    """Start ``pwlab serve NOTEBOOK`` (path relative to the served copy); stopped after the test."""
    servers = []

    def start(notebook: str) -> Server:
        home = tmp_path_factory.mktemp("voila-home")
        from pwlab.commands._jupyter import free_port
        s = Server(["serve", str(lab_root / notebook), "--no-browser", "--port", str(free_port())],
                   _isolated_env(home), home / "serve.log")
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def page(chromium, request, tmp_path):
    """A fresh Chromium (own --user-data-dir) page; screenshot in test-artifacts/ on failure."""
    ctx = chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1400, "height": 1700}, device_scale_factor=1)
    pg = ctx.pages[0] if ctx.pages else ctx.new_page()
    pg.set_default_timeout(90_000)
    pg.js_errors = []
    pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        try:
            path = shoot(pg, f"FAILED-{request.node.name}", force=True)
            print(f"\nscreenshot of the failure: {path}\nJS errors: {pg.js_errors[:5]}")
        except Exception as exc:  # the page may be gone; the test's own failure matters more
            print(f"\nno failure screenshot ({exc}); artifacts dir {ARTIFACTS}")
    ctx.close()


@pytest.fixture
def workspace() -> str:
    """A JupyterLab workspace of its own, so no tab of an earlier test is restored."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def lab_page(lab, page, workspace):
    """(lab, page, workspace); the test's kernels are shut down afterwards."""
    yield lab, page, workspace
    try:
        lab.shutdown_kernels()
    except OSError:
        pass
