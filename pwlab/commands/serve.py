"""``pwlab serve NOTEBOOK``: a classroom dashboard — the notebook's widgets live, its code hidden.

    pwlab serve notebooks/02_routers.ipynb            # URL printed; project it
    pwlab serve notebooks/02_routers.ipynb --ip 0.0.0.0 --port 8866   # students on the network

Runs the notebook with Voila: each visitor gets a fresh kernel that runs every cell, and sees
only the outputs (figures, sliders, buttons), never the code. The same set-up checks as
``pwlab lab`` run first (Voila loads the same front-end extensions and the same kernel).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pwlab.commands import _args, _jupyter
from pwlab.commands.lab import check


def _parser() -> _args.Parser:
    p = _args.Parser(prog="pwlab serve",
                                description="Serve one notebook as a dashboard: widgets live, code hidden.")
    p.add_argument("notebook", help="the .ipynb file to serve")
    p.add_argument("--port", type=_args.port, default=8866, help="port to serve on (default 8866)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 lets a classroom connect)")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument("--theme", choices=("light", "dark"), default="light", help="page theme (default light)")
    p.add_argument("--show-code", action="store_true", help="keep the code cells visible")
    p.add_argument("--skip-checks", action="store_true", help="start without checking the set-up")
    return p


def voila_command(notebook: Path, port: int, ip: str, open_browser: bool, theme: str,
                  show_code: bool) -> list[str]:
    """The ``voila`` command line, run by this very interpreter (so: this environment).

    It holds no token, since any local user can read a command line: ``--Voila.auto_token=True``
    makes Voila's identity provider take it from ``JUPYTER_TOKEN`` in the environment
    (:func:`pwlab.commands._jupyter.token_env`). Without that flag and without ``--Voila.token``,
    Voila would serve with no token at all.
    """
    return [sys.executable, "-m", "voila", str(notebook),
            f"--Voila.ip={ip}", f"--Voila.port={port}", "--Voila.port_retries=0",
            "--Voila.auto_token=True", f"--Voila.open_browser={open_browser}",
            f"--VoilaConfiguration.theme={theme}",
            f"--VoilaConfiguration.strip_sources={not show_code}",
            # A teacher projecting the page wants to see why a cell failed.
            "--VoilaConfiguration.show_tracebacks=True",
            # our page template (TEMPLATES): Voila's "lab" page, less its CDN stylesheets
            "--template=pwlab"]


#: the folder added to JUPYTER_PATH for Voila to find the "pwlab" template (offline page)
TEMPLATES = Path(__file__).parent / "_share"


def voila_env(token: str) -> dict[str, str]:
    """The environment of the Voila child: the token (never on a command line) and our template."""
    env = _jupyter.token_env(token)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(TEMPLATES), env.get("JUPYTER_PATH", "")) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    nb = Path(args.notebook)
    if nb.suffix != ".ipynb" or not nb.is_file():
        p.error(f"notebook must be an existing .ipynb file, got {args.notebook!r}")
    if not args.skip_checks:
        status = _jupyter.report(check(), "pwlab serve")
        if status:
            return status
    if not _jupyter.port_is_free(args.port, args.ip):
        print(f"pwlab serve: port {args.port} is in use; choose another with --port N", file=sys.stderr)
        return 2
    token = _jupyter.new_token()
    host = "127.0.0.1" if args.ip in ("", "0.0.0.0") else args.ip
    url = f"http://{host}:{args.port}/?token={token}"
    cmd = voila_command(nb.resolve(), args.port, args.ip, not args.no_browser, args.theme, args.show_code)
    if _jupyter.running_as_root():
        # Voila has no allow_root switch to pass; it starts every visitor's kernel as this user.
        print("pwlab serve: running as root, so every visitor's kernel runs as root", file=sys.stderr)
    print(f"pwlab serve: each visit runs {nb.name} top to bottom in a fresh kernel, so a page appears "
          "only after the notebook's run time (seconds to a minute; docs/teaching.md lists them)")
    # Readiness by TCP only: fetching the page would start a kernel and run the notebook.
    return _jupyter.supervise(cmd, lambda: _jupyter.port_answers(args.port, host), url,
                              f"Pathways Lab dashboard ({nb.name})", env=voila_env(token))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
