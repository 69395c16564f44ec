"""Shared by ``pwlab lab`` and ``pwlab serve``: front-end checks and a supervised server process.

Widgets that work in the kernel but never appear in the browser are the most common
complaint of ipywidgets and plotly users. The three usual causes, each checked here before a
server starts, with the fix printed:

1. a front-end extension missing or disabled in the *server's* environment
   (``@jupyter-widgets/jupyterlab-manager`` from ``jupyterlab_widgets``, ``jupyterlab-plotly``
   from ``plotly``, ``anywidget`` — plotly >= 6 builds ``FigureWidget`` on anywidget);
2. a front end whose widget protocol does not match the kernel's ipywidgets
   (ipywidgets 8 needs jupyterlab-manager 5, i.e. ``jupyterlab_widgets`` 3);
3. a ``python3`` kernelspec that starts an interpreter from *another* environment (a stale
   ``~/.local/share/jupyter/kernels/python3`` is the classic), where the widget packages
   the front end expects are absent or of another version.

Every lookup is a parameter with a default, so tests can simulate each broken set-up.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

# labextension name -> (pip package that ships it, why the lab needs it)
WIDGETS_MANAGER = "@jupyter-widgets/jupyterlab-manager"
PLOTLY_RENDERER = "jupyterlab-plotly"
ANYWIDGET = "anywidget"
_SHIPPED_BY = {
    WIDGETS_MANAGER: ("jupyterlab_widgets", "renders ipywidgets (sliders, buttons, FigureWidget)"),
    PLOTLY_RENDERER: ("plotly", "renders plotly figures shown as outputs"),
    ANYWIDGET: ("anywidget", "loads plotly's FigureWidget (an anywidget since plotly 6)"),
}
# Kernel-side packages that must import in the kernel's interpreter.
KERNEL_PACKAGES = ("ipykernel", "ipywidgets", "plotly", "anywidget", "pwlab")


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def installed_labextensions() -> dict[str, dict]:
    """Federated labextensions this interpreter's JupyterLab would load: name -> package data.

    Searches the same paths the server does (``jupyter --paths``: user, environment, system).
    """
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_federated_extensions

    return dict(get_federated_extensions(jupyter_path("labextensions")))


def disabled_labextensions() -> set[str]:
    """Extensions disabled by ``jupyter labextension disable`` (page_config.json), as the server reads them."""
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_page_config

    try:
        from jupyterlab.commands import get_app_dir
        settings_dir: str | None = os.path.join(get_app_dir(), "settings")
    except Exception:  # pragma: no cover - jupyterlab missing is reported elsewhere
        settings_dir = None
    cfg = get_page_config(jupyter_path("labextensions"), settings_dir)
    off = cfg.get("disabledExtensions") or {}
    # page_config.json stores a {name: bool} mapping; older files and some tools write a list.
    return {n for n, v in off.items() if v} if isinstance(off, dict) else set(off)


def package_version(name: str) -> str | None:
    """Version of an installed distribution in this interpreter, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def frontend_problems(
    extensions: Mapping[str, Mapping] | None = None,
    disabled: set[str] | None = None,
    version: Callable[[str], str | None] = package_version,
    python: str = sys.executable,
) -> list[str]:
    """What keeps widgets and plotly figures from rendering in this environment's JupyterLab.

    Args:
        extensions: installed labextensions, name -> package data (default: looked up).
        disabled: names of disabled extensions (default: looked up).
        version: installed-distribution version lookup (``importlib.metadata``).
        python: the interpreter to name in the printed fixes.
    Returns:
        One message per problem, each ending with the command that fixes it; empty when fine.
    """
    extensions = installed_labextensions() if extensions is None else extensions
    disabled = disabled_labextensions() if disabled is None else disabled
    problems: list[str] = []
    required = [WIDGETS_MANAGER, PLOTLY_RENDERER]
    if (_major(version("plotly")) or 0) >= 6:
        required.append(ANYWIDGET)
    for name in required:
        pip_name, why = _SHIPPED_BY[name]
        if name not in extensions:
            problems.append(
                f"the JupyterLab extension {name} (which {why}) is not installed in this server's "
                f"environment ({sys.prefix}).\n    fix: {python} -m pip install {pip_name}")
        elif name in disabled:
            problems.append(
                f"the JupyterLab extension {name} (which {why}) is disabled.\n"
                f"    fix: {python} -m jupyter labextension enable {name}")
    # Widget protocol: ipywidgets 8 talks to jupyterlab-manager 5.x, ipywidgets 7 to 3.x.
    widgets_major = _major(version("ipywidgets"))
    manager = extensions.get(WIDGETS_MANAGER)
    manager_major = _major(manager.get("version")) if manager else None
    if widgets_major is not None and manager_major is not None:
        expected = {8: 5, 7: 3}.get(widgets_major)
        if expected is not None and manager_major != expected:
            problems.append(
                f"ipywidgets {version('ipywidgets')} needs {WIDGETS_MANAGER} {expected}.x but "
                f"{manager.get('version')} is installed: widgets would show 'Error displaying widget'.\n"
                f"    fix: {python} -m pip install --upgrade \"ipywidgets=={widgets_major}.*\" "
                f"\"jupyterlab_widgets=={3 if widgets_major == 8 else 1}.*\"")
    if (_major(version("plotly")) or 0) >= 6 and version("anywidget") is None:
        problems.append(
            f"plotly {version('plotly')} needs the anywidget package for FigureWidget.\n"
            f"    fix: {python} -m pip install anywidget")
    return problems


def kernel_argv(name: str = "python3") -> tuple[list[str] | None, str]:
    """The kernelspec ``name`` as the server would launch it: (argv or None, where it was found)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return None, ""
    return list(spec.argv), spec.resource_dir


def resolve_kernel_python(argv0: str) -> str:
    """The interpreter a kernelspec's argv[0] starts, resolved the way jupyter_client does.

    jupyter_client replaces a bare ``python``/``python3``/``python3.X`` with the *server's*
    ``sys.executable`` (jupyter_client.manager.KernelManager.format_kernel_cmd).
    """
    bare = {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]}
    return sys.executable if argv0 in bare else argv0


def probe_interpreter(python: str, packages: tuple[str, ...] = KERNEL_PACKAGES) -> tuple[str | None, str]:
    """Run ``python``: (its sys.prefix, or None when it fails or lacks ``packages``; the error text).

    Uses ``importlib.util.find_spec`` rather than importing, so the probe takes a fraction of a
    second even though pwlab imports torch.
    """
    code = ("import importlib.util, sys\n"
            f"missing = [p for p in {list(packages)!r} if importlib.util.find_spec(p) is None]\n"
            "if missing: sys.exit('missing packages: ' + ', '.join(missing))\n"
            "print(sys.prefix)")
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit status {res.returncode}"
    return res.stdout.strip().splitlines()[-1], ""


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def kernel_problems(
    spec: tuple[list[str] | None, str] | None = None,
    probe: Callable[[str], tuple[str | None, str]] = probe_interpreter,
    prefix: str = sys.prefix,
    python: str = sys.executable,
) -> list[str]:
    """Whether the ``python3`` kernel runs in this (the server's) environment.

    Args:
        spec: (kernelspec argv or None, its folder) (default: looked up as the server does).
        probe: runs an interpreter, returns (its sys.prefix or None, error text).
        prefix: the server's environment (``sys.prefix``).
        python: the server's interpreter, named in the printed fix.
    Returns:
        One message per problem with its fix; empty when the kernel is this environment's.
    """
    argv, where = kernel_argv() if spec is None else spec
    fix = f"    fix: {python} -m ipykernel install --sys-prefix"
    if not argv:
        return [f"no 'python3' kernel is installed for this JupyterLab.\n{fix}"]
    kernel_python = resolve_kernel_python(argv[0])
    kernel_prefix, error = probe(kernel_python)
    if kernel_prefix is None:
        return [f"the 'python3' kernel ({where}) starts {kernel_python}, which cannot import the lab's "
                f"packages ({error}).\n{fix}"
                + (f"\n    (and remove the stale kernelspec: rm -r {where})" if where else "")]
    if not _same_path(kernel_prefix, prefix):
        return [f"the 'python3' kernel ({where}) runs in another environment ({kernel_prefix}) than "
                f"JupyterLab ({prefix}): its widgets would not match the front end.\n{fix}"
                + (f"\n    (and remove the stale kernelspec: rm -r {where})" if where else "")]
    return []


def report(problems: list[str], what: str) -> int:
    """Print problems to stderr; 0 when there are none, else 1."""
    if not problems:
        return 0
    print(f"{what}: widgets would not render, so the server was not started:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    return 1


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (as tornado does: SO_REUSEADDR, so a
    port whose last connections are in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bind to 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def new_token() -> str:
    return secrets.token_hex(24)


def token_env(token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default ``os.environ``) with ``JUPYTER_TOKEN=token``.

    The token travels in the environment, never on the command line: any local user reads a
    process's argv (``ps``, ``/proc/PID/cmdline``), while ``/proc/PID/environ`` is readable by
    its owner (and root) only. jupyter_server's IdentityProvider takes its default token from
    ``JUPYTER_TOKEN``; Voila does too when started with ``--Voila.auto_token=True``.
    """
    env = dict(os.environ if base is None else base)
    env.pop("JUPYTER_TOKEN_FILE", None)     # JUPYTER_TOKEN wins anyway; drop the stale one for clarity
    env["JUPYTER_TOKEN"] = token
    return env


def running_as_root() -> bool:
    """Whether this process runs as root (never on systems without ``os.geteuid``)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def url_answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - localhost only
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (urllib.error.URLError, OSError):
        return False


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def supervise(cmd: list[str], ready: Callable[[], bool], url: str, what: str,
              timeout: float = 180.0, env: Mapping[str, str] | None = None) -> int:
    """Start ``cmd``, print ``url`` once ``ready()``, then wait; Ctrl+C stops the server cleanly."""
    proc = subprocess.Popen(cmd, env=None if env is None else dict(env))
    # A SIGTERM (a process manager, `timeout`, a test's teardown) must stop the server too,
    # not orphan it: turn it into the same clean exit as Ctrl+C.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                print(f"{what}: the server exited with status {proc.returncode} before answering",
                      file=sys.stderr)
                return proc.returncode or 1
            if time.monotonic() > deadline:
                print(f"{what}: the server did not answer within {timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.25)
        print(f"\n{what} is running at:\n\n    {url}\n\nPress Ctrl+C to stop it.\n", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def repo_notebooks() -> Path:
    """The lab's notebooks folder: next to the package in a checkout, else ./notebooks."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    return here if here.is_dir() else Path.cwd() / "notebooks"
