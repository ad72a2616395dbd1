"""Run the service: load the models, then uvicorn until SIGTERM or Ctrl-C, draining
in-flight requests first."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnlm.serve.limits import Limits

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30  # after SIGTERM, how long open requests may take to finish


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(
    models: Mapping[str, str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits = Limits(),  # noqa: B008
    cache: Any = None,
    access_log: bool = False,
) -> None:
    """Serve `models` (name -> file; the first is the default) until told to stop."""
    import uvicorn

    from rnnlm.parallel_compile import close_workers
    from rnnlm.serve.app import create_app
    from rnnlm.serve.served import load_models

    served = load_models(models, limits, cache)
    close_workers()  # everything is compiled: no compile workers idling beside the service
    for one in served.values():
        count = one.model.params.count()
        log.info("Model %r: %s (%s parameters).", one.name, one.path, f"{count:,}")
    app = create_app(served, limits)
    where = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    if is_loopback(host):
        log.info(
            "Listening on %s, reachable from this machine only (--host 0.0.0.0 to open it "
            "to the network). Playground: %s/  API docs: %s/docs",
            where,
            where,
            where,
        )
    else:
        log.warning(
            "Listening on %s: anyone who can reach this machine can use the models "
            "(there is no authentication). Playground: %s/",
            where,
            where,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    if threading.current_thread() is threading.main_thread():
        # uvicorn drains on SIGTERM, then raises the signal again for its default action;
        # by then the work is done, so that second one only needs to end run() cleanly.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    else:
        server.run()
    log.info("Stopped.")
