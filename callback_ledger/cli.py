"""The `callback-ledger` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import orjson

from callback_ledger.config import ConfigError, Settings


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from callback_ledger.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Let in-flight callbacks finish their commit on shutdown.
        timeout_graceful_shutdown=10,
    )
    return 0


def quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from callback_ledger.ledger import Ledger

    ledger = Ledger.from_settings(settings)
    for item in ledger.quarantined(args.after, args.limit):
        sys.stdout.write(orjson.dumps(item).decode() + "\n")
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
    p.set_defaults(run=serve)

    p = commands.add_parser(
        "quarantine", help="list refused callbacks kept for an operator (JSONL)"
    )
    p.add_argument("--after", type=int, default=0, help="cursor: list entries after this id")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=quarantine)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        parser.exit(2, f"callback-ledger: configuration error: {exc}\n")
    return int(args.run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
