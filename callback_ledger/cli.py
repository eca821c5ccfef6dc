"""The `callback-ledger` command."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from callback_ledger.audit_cli import add_commands as add_audit_commands
from callback_ledger.followup_cli import add_commands as add_followup_commands
from callback_ledger.keys_cli import add_commands as add_key_commands
from callback_ledger.verify_cli import add_commands as add_verify_commands
from domain.callbacks import loads_body
from service.logs import setup as setup_logs
from store.config import ConfigError, Settings, collect_less_often

# serve's HTTP limits: (option, environment variable). See api/connections.py.
HTTP_LIMITS = (
    ("max_connections", "LEDGER_MAX_CONNECTIONS"),
    ("keepalive_s", "LEDGER_KEEPALIVE_S"),
    ("header_timeout_s", "LEDGER_HEADER_TIMEOUT_S"),
    ("max_header_bytes", "LEDGER_MAX_HEADER_BYTES"),
    ("max_headers", "LEDGER_MAX_HEADERS"),
)


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
    from service.logs import SHOWN_ONCE
    from service.runtime import Runtime
    from store.keys import SCOPES, KeyStore

    log = logging.getLogger("callback_ledger")
    runtime = Runtime(settings)
    try:
        key = KeyStore(runtime.store_database()).create_first()
    except Exception as exc:  # the store may be down: serve starts anyway and answers 503
        log.warning("could not check the API keys now (%s); create one with `keys create`", exc)
        return
    finally:
        runtime.close()
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


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from service import multiproc

    # Before any server process imports prometheus_client: one fresh directory for this run.
    multiprocess = args.workers > 1 or bool(os.environ.get(multiproc.ENV))
    metrics_dir = multiproc.fresh_dir() if multiprocess else None
    if metrics_dir is not None:
        # uvicorn stops on SIGTERM, then raises it again: exit through `finally` instead.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _serve(settings, args)
    finally:
        if metrics_dir is not None:
            multiproc.remove(metrics_dir)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.app import create_app
    from api.connections import FD_RESERVE, PROTOCOL, raise_fd_limit
    from service import logs

    # Options go through the environment: worker processes and the connection guard read
    # their settings from it.
    for name, key in HTTP_LIMITS:
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
    if private is None:
        if args.workers == 1:
            uvicorn.run(create_app(settings), **options)
            return 0
        # Each process reads the same environment and group-commits on its own; conflicts
        # between processes on one stream are resolved by the store's optimistic concurrency.
        uvicorn.run(
            "api.app:app_from_env", factory=True, workers=args.workers, **options
        )
        return 0
    # Two listening sockets served by the same app (in each worker): it tells them apart by
    # the port a request arrived on (api/auth.py PublicSide).
    app: Any = create_app(settings) if args.workers == 1 else "api.app:app_from_env"
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


def quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from projections.read_model.quarantine import quarantined
    from service.runtime import Runtime
    from store.keys import KeyStore, cli_user

    runtime = Runtime(settings)
    count = 0
    try:
        for item in quarantined(runtime.ledger(), args.after, args.limit):
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
            count += 1
        # Refused bodies are audit data (GET /quarantine needs the audit scope): logged as read.
        KeyStore(runtime.store_database()).record_access(cli_user(), "quarantine", {}, count)
    finally:
        runtime.close()
    return 0


def read_bodies(path: str) -> Iterator[tuple[str, bytes]]:
    """(where, raw body) for each body in a file: one JSON document (an object, or an array of
    them: a pretty-printed export), or JSON Lines. Raises OSError when it cannot be read."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        document = loads_body(data)
    except ValueError:
        document = None
    if isinstance(document, dict):
        yield path, data.strip()
        return
    if isinstance(document, list):
        for number, body in enumerate(document, 1):
            yield f"{path}[{number}]", orjson.dumps(body)
        return
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield f"{path}:{number}", line.strip()


def reinterpret(settings: Settings, args: argparse.Namespace) -> int:
    """Records what an earlier version kept in the catch-all and this one interprets."""
    from service.runtime import Runtime

    runtime = Runtime(settings)
    try:
        counts = runtime.ledger().reinterpret_kept()
    finally:
        runtime.close()
    print(
        f"recorded {counts['accepted']}, already recorded {counts['duplicate']}, "
        f"left in the catch-all {counts['not_interpretable']} (they do not fit the contract)"
    )
    return 0


def ingest(settings: Settings, args: argparse.Namespace) -> int:
    """Records callback bodies from files (a JSON document, or one JSON object per line): a
    quarantined body once an operator has fixed it, or a backfill. Kept like any callback,
    marked as not signed and as coming from this command. Exit status 1 if any body was
    refused or any file could not be read."""
    import asyncio
    from datetime import UTC, datetime

    from domain.receipt import Receipt
    from service.recorder import Recorder, alone
    from service.runtime import Runtime

    unreadable = [path for path in args.files if not os.path.isfile(path)]
    for path in unreadable:
        sys.stderr.write(f"{path}: no such file\n")
    runtime = Runtime(settings)
    # Refusals are reported, not quarantined: the operator reads them and fixes the file.
    recorder = Recorder(alone(runtime.ledger()), keep_refused=False)
    refused = 0
    try:
        with asyncio.Runner() as runner:
            for path in args.files:
                if path in unreadable:
                    continue
                try:
                    bodies = list(read_bodies(path))
                except OSError as exc:
                    refused += 1
                    sys.stderr.write(f"{path}: cannot read it: {exc.strerror or exc}\n")
                    continue
                for where, raw in bodies:
                    receipt = Receipt(
                        # Not UTF-8 is refused as not JSON before the receipt is read.
                        raw.decode("utf-8", errors="replace"),
                        datetime.now(UTC),
                        False,
                        {"x-ledger-source": "callback-ledger ingest"},
                    )
                    outcome = runner.run(recorder.record(raw, receipt))
                    if outcome.refusal is not None:
                        refused += 1
                        sys.stderr.write(f"{where}: refused: {outcome.refusal.reason}\n")
                        continue
                    sys.stdout.write(
                        f"{where}: {outcome.status} {outcome.trigger} ({outcome.events} events)\n"
                    )
    finally:
        runtime.close()
    return 1 if refused or unreadable else 0


def project(settings: Settings, args: argparse.Namespace) -> int:
    """The projection worker, for deployments that run `serve` with LEDGER_PROJECTIONS=off."""
    import signal

    from projections.follower import Follower
    from service.runtime import Runtime

    runtime = Runtime(settings)
    runtime.projector().page_size = args.page_size
    # Nothing wakes the worker: it polls every `interval` (backing off on errors).
    follower = Follower(runtime.projector, idle_s=args.interval, min_interval_s=0)
    signal.signal(signal.SIGTERM, lambda *_: follower.halt())
    signal.signal(signal.SIGINT, lambda *_: follower.halt())
    logging.getLogger("callback_ledger").info("projection worker following the log")
    try:
        follower.run(once=args.once)
    finally:
        runtime.close()
    return 0


def replay(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from service.replay import replay as run_replay

    # Stopped by SIGTERM as by Ctrl-C: its part processes are stopped too, and a rerun resumes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    run_replay(
        settings,
        args.projection or None,
        fresh=args.fresh,
        page_size=args.page_size,
        jobs=args.jobs,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="callback-ledger",
        description="Event-sourced store for Sinch Conversation API callbacks. "
        "Configured by LEDGER_DATABASE_URL and SINCH_WEBHOOK_SECRET.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

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
    for name, key in HTTP_LIMITS:
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

    p = commands.add_parser(
        "quarantine", help="list refused callbacks kept for an operator (JSONL)"
    )
    p.add_argument("--after", type=int, default=0, help="cursor: list entries after this id")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=quarantine)

    p = commands.add_parser(
        "ingest",
        help="record callback bodies from files (a JSON object or array, or JSON Lines)",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(run=ingest)

    p = commands.add_parser(
        "reinterpret",
        help="record the catch-all's callbacks of triggers this version interprets "
        "(MESSAGE_SUBMIT kept by earlier versions) on their messages; run once after upgrading",
    )
    p.set_defaults(run=reinterpret)

    p = commands.add_parser("project", help="follow the log into the read tables (worker)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--once", action="store_true", help="catch up once and exit")
    p.add_argument("--page-size", type=int, default=1000, help="events per transaction")
    p.set_defaults(run=project)

    p = commands.add_parser("replay", help="rebuild projections from the first event")
    p.add_argument(
        "--projection",
        action="append",
        choices=["messages", "consent"],
        help="one projection (repeatable); default: all",
    )
    p.add_argument("--fresh", action="store_true", help="discard an interrupted rebuild")
    p.add_argument(
        "--page-size",
        type=int,
        default=5000,
        help="events per transaction (5000: fastest measured; about 120 MB at most)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes building the messages projection, each its share of the messages "
        "(PostgreSQL; default 1; 2 on 2 cores: about 1.5x the events/s)",
    )
    p.set_defaults(run=replay)

    add_audit_commands(commands)
    add_followup_commands(commands)
    add_key_commands(commands)
    add_verify_commands(commands)

    args = parser.parse_args(argv)
    collect_less_often()
    try:
        setup_logs(getattr(args, "log_level", "info"))
        settings = Settings.from_env()
        return int(args.run(settings, args))
    except ConfigError as exc:
        parser.exit(2, f"callback-ledger: configuration error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
