"""prefork: a pre-fork server for WSGI apps and plain TCP handlers.

Public API: `serve()` runs a server in this process (it becomes the master), `Config`
holds settings, `__version__`. Everything else is internal.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def serve(app: Any, protocol: str = "http", **settings: Any) -> int:
    """Serve `app` (a callable, or a 'module:callable' spec) until stopped.

    `protocol='http'`: app is a WSGI callable. `protocol='tcp'`: app is `handle(conn, addr)`.
    Settings use the config-file names (`bind=["127.0.0.1:9000"], workers=4, ...`).
    Returns the exit code; raises ConfigError for a bad setting.
    """
    from .config import Config, validate
    from .master import Master

    values = {name: validate(name, value, "serve()") for name, value in settings.items()}
    values["protocol"] = validate("protocol", protocol, "serve()")
    if isinstance(app, str):
        return Master(Config(app=app, values=values), []).run()
    spec = f"{getattr(app, '__module__', '?')}:{getattr(app, '__qualname__', 'app')}"
    return Master(Config(app=spec, values=values), [], app=app).run()


from .config import Config, ConfigError  # noqa: E402  (re-exported)

__all__ = ["Config", "ConfigError", "serve", "__version__"]
