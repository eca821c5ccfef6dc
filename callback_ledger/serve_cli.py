"""`callback-ledger serve`: the webhook receiver (and the private listener), with its HTTP
limits, the first admin key, and the refusal to run unsigned on a public address."""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import fields
from typing import Any

from service.settings import ENV, ConfigError, Settings

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# serve's HTTP limits (api/connections.py): option -> environment variable.
LIMITS = ("max_connections", "keepalive_s", "header_timeout_s", "max_header_bytes", "max_headers")
HTTP_LIMITS = {f.name: f.metadata[ENV] for f in fields(Settings) if f.name in LIMITS}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may be reachable from anywhere


def refuse_unsigned(settings: Settings, args: argparse.Namespace) -> None:
    """Secure by default: no unsigned callbacks from beyond this machine unless asked for."""
    if settings.webhook_secrets or args.allow_unsigned:
        return
    hosts = [args.host] + ([settings.private_address[0]] if settings.private_address else [])
    exposed = [h for h in hosts if not is_loopback(h)]
    if exposed:
        raise ConfigError(
            f"refusing to accept unsigned callbacks on {', '.join(exposed)}, which is not a "
            "loopback address: anyone who can reach it could write to the ledger and forge "
            "consent. Set SINCH_WEBHOOK_SECRET to the secret configured in Sinch (or pass "
            "--allow-unsigned if something in front of this service checks signatures)"
        )


def first_key(settings: Settings) -> None:
    """On a store with no key at all: an all-scopes key named admin, printed once, so the
    first queries work (as Jupyter prints its token)."""
    from access.api_keys import SCOPES, KeyStore
    from service.logs import SHOWN_ONCE
    from service.runtime import Runtime

    log = logging.getLogger("callback_ledger")
    try:
        with Runtime(settings) as runtime:
            key = KeyStore(runtime.store_database()).create_first()
    except Exception as exc:  # the store may be down: serve starts anyway and answers 503
        log.warning("could not check the API keys now (%s); create one with `keys create`", exc)
        return
    if key is None:
        return
    log.warning("=" * 72)
    log.warning(
        "No API key existed: created the key 'admin' with every scope (%s). It is shown this "
        "once only; every route but the webhook needs it:",
        ", ".join(SCOPES),
    )
    # The log redacts every key but this one, shown once (see logs.SHOWN_ONCE).
    log.warning("send it as the Authorization header:", extra={SHOWN_ONCE: key})
    log.warning(
        "Create narrower keys with: callback-ledger keys create --name NAME --scope read "
        "[--expires-in DAYS]; then revoke this one: callback-ledger keys revoke admin"
    )
    log.warning("=" * 72)


def refuse_unwritable_store(settings: Settings) -> None:
    """A SQLite store whose files cannot be written fails every write, or (an immutable -shm)
    kills the server at its first: refused before it starts, saying which file."""
    from store.sqlite import unwritable_files

    path = settings.store_backend().store_file()
    unwritable = unwritable_files(path) if path is not None else []
    if unwritable:
        raise ConfigError(
            f"the SQLite store's file {', '.join(unwritable)} cannot be written (immutable: "
            "see lsattr and chattr -i; or read-only to this user): the server could not "
            "record callbacks (an immutable -shm would kill it at the first)"
        )


def serve(settings: Settings, args: argparse.Namespace) -> int:
    refuse_unwritable_store(settings)
    # A file made unwritable while serving (above) still kills the process with SIGBUS: the
    # interpreter then writes the fault and the stacks to stderr, the log, before it dies (the
    # variable does the same in the worker processes --workers starts).
    faulthandler.enable()
    os.environ["PYTHONFAULTHANDLER"] = "1"
    if args.workers == 1 and not os.environ.get(METRICS_DIR):
        return _serve(settings, args)
    # prometheus_client's multiprocess mode: a fresh directory for this run's metric files
    # (an earlier run's would be summed in), inside the one given if any, set before any
    # server process imports prometheus_client (it reads the variable at import).
    parent = os.environ.get(METRICS_DIR) or None
    if parent:
        os.makedirs(parent, exist_ok=True)
    metrics_dir = os.environ[METRICS_DIR] = tempfile.mkdtemp(
        prefix="callback-ledger-metrics-", dir=parent
    )
    # uvicorn stops on SIGTERM, then raises it again: exit through `finally` instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _serve(settings, args)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.app import create_app
    from api.connections import FD_RESERVE, PROTOCOL, raise_fd_limit
    from service import logs

    # Options go through the environment: worker processes and the connection guard read
    # their settings from it.
    for name, key in HTTP_LIMITS.items():
        if getattr(args, name) is not None:
            os.environ[key] = str(getattr(args, name))
    if args.private_listen:
        os.environ["LEDGER_PRIVATE_LISTEN"] = args.private_listen
    fds = raise_fd_limit()
    budget = (fds - FD_RESERVE) // 2
    if Settings.from_env().max_connections > budget:
        logging.getLogger("callback_ledger").warning(
            "LEDGER_MAX_CONNECTIONS lowered to %d: the file-descriptor limit is %d", budget, fds
        )
        os.environ["LEDGER_MAX_CONNECTIONS"] = str(max(budget, 1))
    settings = Settings.from_env()
    refuse_unsigned(settings, args)
    private = settings.private_address
    if private is not None and private[1] == args.port:
        raise ConfigError(
            f"the private listener {settings.private_listen} must use another port than the "
            f"public one ({args.port}): the port tells them apart"
        )
    if args.workers > 1 and not settings.store_backend().several_writers:
        raise ConfigError(
            "--workers above 1 needs PostgreSQL: SQLite takes one writer at a time, so more "
            "processes would only queue on its lock"
        )
    # Before any worker starts: the key tables are made once, and the first key printed once.
    first_key(settings)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        # Every line in one format (LEDGER_LOG_FORMAT); our request line replaces the access log.
        "log_config": logs.config(args.log_level),
        "access_log": False,
        # Let in-flight callbacks finish their commit on shutdown.
        "timeout_graceful_shutdown": 10,
        "http": PROTOCOL,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keepalive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    # Each worker process reads the same environment and group-commits on its own; conflicts
    # between processes on one stream are resolved by the store's optimistic concurrency.
    app: Any = create_app(settings) if args.workers == 1 else "api.app:app_from_env"
    if private is None:
        uvicorn.run(app, factory=args.workers > 1, workers=args.workers, **options)
        return 0
    # Two listening sockets served by the same app (in each worker): it tells them apart by
    # the port a request arrived on (api/auth.py PublicSide).
    config = uvicorn.Config(app, factory=args.workers > 1, workers=args.workers, **options)
    private_config = uvicorn.Config(app, **{**options, "host": private[0], "port": private[1]})
    sockets = [config.bind_socket(), private_config.bind_socket()]
    logging.getLogger("callback_ledger").info(
        "public listener %s:%d (webhook and bare /healthz only); private listener %s:%d",
        args.host,
        args.port,
        *private,
    )
    if args.workers > 1:
        Multiprocess(config, sockets=sockets).run()
        return 0
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    return 0 if server.started else 3


def add_command(commands: Any) -> None:
    p = commands.add_parser("serve", help="run the webhook receiver")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("LEDGER_WORKERS", "1")),
        help="server processes (PostgreSQL only; default LEDGER_WORKERS or 1)",
    )
    for name, key in HTTP_LIMITS.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {key}")
    p.add_argument(
        "--private-listen",
        metavar="HOST:PORT",
        help="serve every route but the webhook only on this address (default "
        "LEDGER_PRIVATE_LISTEN; unset: all routes on --host/--port, all needing a key)",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept unsigned callbacks on a non-loopback address (without "
        "SINCH_WEBHOOK_SECRET, serve refuses to)",
    )
    p.set_defaults(run=serve)
