"""Prints the modules a callback passes through: from the webhook to its committed events, and
from the log to the read tables, in the order each is first entered, with the folders entered
on the way. Traces one warm callback in a fresh SQLite store (startup is not counted).

    .venv/bin/python scripts/paths.py [--json]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("domain", "store", "projections", "service", "api", "callback_ledger")


def _module(filename: str) -> str | None:
    try:
        relative = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return None
    if relative.parts[0] not in PACKAGES or relative.suffix != ".py":
        return None
    return relative.as_posix()


_seen: list[str] | None = None


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" or _seen is None:
        return
    module = _module(frame.f_code.co_filename)
    if module is not None and module not in _seen:
        _seen.append(module)


@contextmanager
def traced() -> Iterator[list[str]]:
    """The product modules entered while inside, in the order of their first call, on any
    thread started after `profile_every_thread`."""
    global _seen
    _seen = seen = list[str]()
    try:
        yield seen
    finally:
        _seen = None


def profile_every_thread() -> None:
    threading.setprofile(_profile)
    sys.setprofile(_profile)


def folders(modules: list[str]) -> list[str]:
    """The folders in the order they are entered: a folder entered twice appears twice."""
    entered: list[str] = []
    for module in modules:
        folder = module.rsplit("/", 1)[0]
        if not entered or entered[-1] != folder:
            entered.append(folder)
    return entered


def body(event_id: str, message_id: str) -> bytes:
    return json.dumps(
        {
            "app_id": "01EB37HMH1M6SV18BSNS3G135H",
            "accepted_time": "2026-01-05T10:00:00Z",
            "event_time": "2026-01-05T10:00:01Z",
            "project_id": "c36f3d3d-1513-2edd-ae42-11995557ff61",
            "message_metadata": "",
            "event_delivery_report": {
                "message_id": message_id,
                "event_id": event_id,
                "status": "DELIVERED",
                "channel_identity": {"channel": "SMS", "identity": "46700000001"},
                "contact_id": "01EXA07N79THJ20WSN6AS30TMW",
            },
        }
    ).encode()


def trace_paths() -> dict[str, list[str]]:
    from starlette.testclient import TestClient

    from api.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings
    from store.vault import Secrets

    directory = tempfile.mkdtemp()
    settings = Settings(
        database_url=f"sqlite:///{directory}/paths.sqlite3",
        keys=Secrets(os.urandom(32), os.urandom(32)),
        projections="off",
    )
    post: Callable[[str, str], None]
    with TestClient(create_app(settings)) as client:

        def post(event_id: str, message_id: str) -> None:
            answer = client.post("/webhooks/sinch", content=body(event_id, message_id))
            assert answer.status_code == 200, answer.text

        post("01HZ0000000000000000000001", "01HZ00000000000000000000M1")
        with traced() as webhook:
            post("01HZ0000000000000000000002", "01HZ00000000000000000000M2")

    runtime = Runtime(settings)
    try:
        projector = runtime.projector()
        projector.catch_up()
        with TestClient(create_app(settings)) as client:
            answer = client.post(
                "/webhooks/sinch",
                content=body("01HZ0000000000000000000003", "01HZ00000000000000000000M3"),
            )
            assert answer.status_code == 200, answer.text
        with traced() as projection:
            projector.catch_up()
    finally:
        runtime.close()
    return {"webhook": webhook, "projection": projection}


def main() -> int:
    sys.path.insert(0, str(ROOT))
    profile_every_thread()
    paths = trace_paths()
    if "--json" in sys.argv:
        print(json.dumps(paths, indent=2))
        return 0
    for name, modules in paths.items():
        entered = folders(modules)
        print(f"{name}: {len(modules)} modules; folders entered: {' -> '.join(entered)}")
        for module in modules:
            print(f"  {module}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
