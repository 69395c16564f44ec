"""``pwlab lab``: JupyterLab on the notebooks, opened at ``00_welcome.ipynb``, URL printed.

    pwlab lab                      # http://127.0.0.1:8888/lab/tree/00_welcome.ipynb?token=...
    pwlab lab --port 9000 --no-browser
    pwlab lab --check              # only check the set-up; exit status 1 with the fixes when broken
    pwlab lab --LabApp.some_trait=value   # any --Class.trait=value goes to JupyterLab as is

Before starting, checks that the widget and plotly front-end extensions are active in this
environment and that the ``python3`` kernel runs in this same environment (see
:mod:`pwlab.commands._jupyter`); when not, prints what is wrong and the command that fixes it,
and exits with status 1 instead of opening a lab whose widgets would not render.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pwlab.commands import _args, _jupyter

WELCOME = "00_welcome.ipynb"


def _parser() -> _args.Parser:
    p = _args.Parser(prog="pwlab lab", description="Open the Pathways Lab notebooks in JupyterLab.")
    p.add_argument("--port", type=_args.port, default=8888, help="port to serve on (default 8888)")
    p.add_argument("--ip", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument("--notebook-dir", default=None, help="folder to serve (default: the lab's notebooks/)")
    p.add_argument("--check", action="store_true", help="only check the set-up, start nothing")
    p.add_argument("--skip-checks", action="store_true", help="start without checking the set-up")
    return p


def _split_passthrough(p: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Known options, plus ``--Class.trait=value`` options handed to the server unchanged."""
    args, rest = p.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "." in a.split("=")[0])]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)} (server options must look like --Class.trait=value)")
    return args, rest


def check() -> list[str]:
    """Every problem that would keep the lab's widgets from rendering (empty when none)."""
    return _jupyter.frontend_problems() + _jupyter.kernel_problems()


#: the Jupyter config file that takes the token out of the environment kernels inherit
SERVER_CONFIG = Path(__file__).parent / "_share" / "jupyter" / "pwlab_server_config.py"


def lab_command(root: Path, port: int, ip: str, open_browser: bool, first: str | None,
                extra: list[str]) -> list[str]:
    """The ``jupyter lab`` command line, run by this very interpreter (so: this environment).

    It holds no token: that goes in the environment (:func:`pwlab.commands._jupyter.token_env`),
    since any local user can read a command line; :data:`SERVER_CONFIG` then moves it from the
    server's environment into its settings, so the kernels it starts do not inherit it.
    """
    cmd = [sys.executable, "-m", "jupyterlab", f"--config={SERVER_CONFIG}",
           f"--ServerApp.root_dir={root}", f"--ServerApp.ip={ip}", f"--ServerApp.port={port}",
           # Fail rather than silently move to another port: the printed URL must be right.
           "--ServerApp.port_retries=0",
           f"--ServerApp.open_browser={open_browser}"]
    if _jupyter.running_as_root():
        # Containers and classroom VMs often run as root; Jupyter refuses that without this flag.
        # Only then: a server that need not run as root must not be told it may.
        cmd.append("--ServerApp.allow_root=True")
    if first:
        cmd.append(f"--ServerApp.default_url=/lab/tree/{first}")
    return cmd + extra


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args, extra = _split_passthrough(p, list(sys.argv[1:] if argv is None else argv))
    root = Path(args.notebook_dir) if args.notebook_dir else _jupyter.repo_notebooks()
    if not root.is_dir():
        p.error(f"--notebook-dir {str(root)!r} is not a folder")
    if not args.skip_checks:
        status = _jupyter.report(check(), "pwlab lab")
        if status or args.check:
            if not status:
                print("pwlab lab: widget and plotly extensions active, kernel in this environment: OK")
            return status
    if not _jupyter.port_is_free(args.port, args.ip):
        print(f"pwlab lab: port {args.port} is in use; choose another with --port N", file=sys.stderr)
        return 2
    first = WELCOME if (root / WELCOME).is_file() else None
    token = _jupyter.new_token()
    host = "127.0.0.1" if args.ip in ("", "0.0.0.0") else args.ip
    base = f"http://{host}:{args.port}"
    url = f"{base}/lab/tree/{first}?token={token}" if first else f"{base}/lab?token={token}"
    cmd = lab_command(root.resolve(), args.port, args.ip, not args.no_browser, first, extra)
    if "--ServerApp.allow_root=True" in cmd:
        print("pwlab lab: running as root, so JupyterLab is started with --ServerApp.allow_root=True "
              "(its kernels run as root too)", file=sys.stderr)
    return _jupyter.supervise(cmd, lambda: _jupyter.url_answers(f"{base}/api/status?token={token}"),
                              url, "Pathways Lab", env=_jupyter.token_env(token))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
