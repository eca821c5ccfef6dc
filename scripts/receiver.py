"""A receiver under load: a server process on a free loopback port, the PostgreSQL databases
it writes to, and wrk driving it with the signed corpus.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.postgres_server import create_database, drop_database, find_or_start, free_port

HERE = Path(__file__).parent


class Receiver:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir / f"{name.replace(' ', '_')}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url + "/webhooks/sinch", content=b"{}", timeout=5)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def run_wrk(url: str, corpus: Path, duration: int, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "bench.lua"),
            url + "/webhooks/sinch",
            "--",
            str(corpus),
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    found = re.search(r"^WRK (\{.*\})$", done.stdout, re.M)
    if not found:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    result: dict[str, Any] = orjson.loads(found.group(1))
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


@contextmanager
def postgres_databases(count: int) -> Iterator[list[str]]:
    admin, server = find_or_start()
    urls = [create_database(admin, "ledger_bench") for _ in range(count)]
    try:
        yield urls
    finally:
        for url in urls:
            drop_database(admin, url)
        if server is not None:
            server.destroy()
