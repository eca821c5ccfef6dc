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
_returns: set[tuple[str, ...]] = set()


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" or _seen is None:
        return
    module = _module(frame.f_code.co_filename)
    if module is None:
        return
    if module not in _seen:
        _seen.append(module)
    stack: list[str] = []
    caller: FrameType | None = frame
    while caller is not None:
        name = _module(caller.f_code.co_filename)
        if name is not None:
            stack.append(name)
        caller = caller.f_back
    stack.reverse()
    entered = folders(stack)
    if len(entered) != len(set(entered)):
        _returns.add(tuple(stack))


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


def bodies(n: int) -> list[bytes]:
    """A delivery report, an opt-out and an inbound STOP, each new to the store."""
    common = {
        "app_id": "01EB37HMH1M6SV18BSNS3G135H",
        "accepted_time": "2026-01-05T10:00:00Z",
        "event_time": "2026-01-05T10:00:01Z",
        "project_id": "c36f3d3d-1513-2edd-ae42-11995557ff61",
        "message_metadata": "",
    }
    number = {"channel": "SMS", "identity": f"4670000{n:04d}"}
    contact = f"01EXA07N79THJ20WSN6AS3{n:04d}"
    return [
        json.dumps(
            {
                **common,
                "message_delivery_report": {
                    "message_id": f"01HZ00000000000000000{n:05d}",
                    "status": "DELIVERED",
                    "channel_identity": number,
                    "contact_id": contact,
                },
            }
        ).encode(),
        json.dumps(
            {
                **common,
                "opt_out_notification": {
                    **number,
                    "contact_id": contact,
                    "status": "OPT_OUT_SUCCEEDED",
                },
            }
        ).encode(),
        json.dumps(
            {
                **common,
                "message": {
                    "id": f"01HZ00000000000000002{n:05d}",
                    "direction": "TO_APP",
                    "contact_message": {"text_message": {"text": "STOP"}},
                    "channel_identity": number,
                    "contact_id": contact,
                    "accept_time": "2026-01-05T10:00:00Z",
                },
            }
        ).encode(),
    ]


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
    post: Callable[[int], None]
    with TestClient(create_app(settings)) as client:

        def post(n: int) -> None:
            for content in bodies(n):
                answer = client.post("/webhooks/sinch", content=content)
                assert answer.status_code == 200, answer.text

        post(1)
        with traced() as webhook:
            post(2)

    runtime = Runtime(settings)
    try:
        projector = runtime.projector()
        projector.catch_up()
        with TestClient(create_app(settings)) as client:
            post(3)
        with traced() as projection:
            projector.catch_up()
    finally:
        runtime.close()
    return {"webhook": webhook, "projection": projection}


def returns() -> list[tuple[str, ...]]:
    """The call stacks seen that enter a folder again below another: a callee calling back
    up. Each is cut to the shortest such stack's modules."""
    found: dict[tuple[str, ...], tuple[str, ...]] = {}
    for stack in _returns:
        key = tuple(folders(list(stack)))
        if key not in found or len(stack) < len(found[key]):
            found[key] = stack
    return sorted(found.values())


def main() -> int:
    sys.path.insert(0, str(ROOT))
    profile_every_thread()
    paths = trace_paths()
    if "--json" in sys.argv:
        print(json.dumps({**paths, "returns": returns()}, indent=2))
        return 0
    for name, modules in paths.items():
        entered = folders(modules)
        print(f"{name}: {len(modules)} modules; folders entered: {' -> '.join(entered)}")
        for module in modules:
            print(f"  {module}")
    back = returns()
    print(f"call stacks that enter a folder again: {len(back)}")
    for stack in back:
        print("  " + " > ".join(stack))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
