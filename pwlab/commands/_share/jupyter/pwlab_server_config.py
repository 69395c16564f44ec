# The configuration `pwlab lab` starts JupyterLab with (--config). It takes the server's token
# out of the environment that every kernel inherits: the server keeps it as its own setting,
# and notebook code (os.environ, !env) never sees it.
import os

_token = os.environ.pop("JUPYTER_TOKEN", None)
if _token:
    c.IdentityProvider.token = _token  # noqa: F821 - `c` is the config object Jupyter provides
