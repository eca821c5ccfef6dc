"""The README's tour, run as written: its shell blocks in order, in one bash, against the
server its first block starts (`scripts/serve`, on a terminal, as a reader runs it), each
shown answer compared with the real one.

Only what the README tells the reader to choose is substituted: the port (8000) and the path
of the tour's store. Everything else is the README's own text, run in a user's environment
(no ledger or Sinch variables inherited from the test session)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.helpers import printed_key
from tests.postgres_server import free_port
from tests.unit.test_packaging import README, ROOT

DEFAULT_URL = "http://127.0.0.1:8000"
TOUR_STORE = "sqlite:///tour.sqlite3"
BLOCK = re.compile(r"<!-- tour:(\d+) -->\n```sh\n(.*?)```", re.S)
SHOWN = re.compile(r"<!-- tour:(\d+) shows -->\n```(json|text)\n(.*?)```", re.S)
VARIABLE = "..."


@dataclass
class Step:
    number: int
    script: str
    shown_kind: str | None = None
    shown: str | None = None


def tour(readme: str) -> list[Step]:
    steps = {int(n): Step(int(n), script) for n, script in BLOCK.findall(readme)}
    for n, kind, shown in SHOWN.findall(readme):
        steps[int(n)].shown_kind, steps[int(n)].shown = kind, shown
    return [steps[n] for n in sorted(steps)]


def matches(shown: Any, actual: Any) -> bool:
    """Every shown field equals the actual one; `...` stands for any value and `abc...` for
    any text starting with `abc`. Fields the README leaves out may be there."""
    if isinstance(shown, str) and isinstance(actual, str) and shown.endswith(VARIABLE):
        return actual.startswith(shown[: -len(VARIABLE)])
    if shown == VARIABLE:
        return True
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(value, actual[key]) for key, value in shown.items()
        )
    if isinstance(shown, list):
        return (
            isinstance(actual, list)
            and len(shown) == len(actual)
            and all(matches(s, a) for s, a in zip(shown, actual, strict=True))
        )
    return bool(shown == actual)


def lines_match(shown: str, actual: str) -> bool:
    """Each shown line is in the actual text, in order (other lines may come between them);
    `...` in a shown line stands for any text."""
    patterns = [
        re.compile(".*".join(re.escape(part) for part in line.split(VARIABLE)))
        for line in shown.splitlines()
    ]
    remaining = iter(actual.splitlines())
    return all(any(p.fullmatch(line.rstrip()) for line in remaining) for p in patterns)


def user_env() -> dict[str, str]:
    """The test session's environment without the ledger's and Sinch's variables: conftest
    sets keys there that a reader's shell does not have."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SINCH_"))}


class TerminalServer:
    """The tour's server block run in bash on a pseudo-terminal, as a reader runs it: its log
    is then in the format a terminal gets."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        parent, child = pty.openpty()
        self.process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            env=env,
            stdin=child,
            stdout=child,
            stderr=child,
            start_new_session=True,
        )
        os.close(child)
        self._parent = parent
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._parent, 65536)
            except OSError:  # the terminal closed: every process on it has exited
                return
            if not chunk:
                return
            self._output += chunk

    @property
    def output(self) -> str:
        return self._output.decode(errors="replace").replace("\r\n", "\n")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        os.close(self._parent)


class Shell:
    """One bash that runs the blocks in turn, so what one block sets the next one has."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        self.process = subprocess.Popen(
            ["bash"], cwd=ROOT, env=env, stdin=subprocess.PIPE, text=True
        )

    def run(self, step: Step, script: str, timeout_s: float = 60) -> tuple[int, str, str]:
        block = self.workdir / f"block{step.number}.sh"
        block.write_text(script)
        out, err, done = (self.workdir / f"block{step.number}.{x}" for x in ("out", "err", "rc"))
        assert self.process.stdin is not None
        self.process.stdin.write(f"source {block} > {out} 2> {err}; echo $? > {done}.tmp\n")
        self.process.stdin.write(f"mv {done}.tmp {done}\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while not done.exists():
            assert self.process.poll() is None, f"bash exited during block {step.number}"
            assert time.monotonic() < deadline, f"block {step.number} did not finish"
            time.sleep(0.05)
        return int(done.read_text()), out.read_text(), err.read_text()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def wait_until_listening(server: TerminalServer, url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s  # the first run of scripts/serve may install
    while True:
        assert server.process.poll() is None, server.output
        try:
            httpx.get(url + "/healthz", timeout=5)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the tour's server did not come up"
            time.sleep(0.2)


def wait_for_projections(url: str, key: str, timeout_s: float = 30) -> None:
    """A reader types the next command a few seconds later; the projections follow the log
    within a second. Wait for them rather than sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(url + "/healthz", headers={"Authorization": f"Bearer {key}"}).json()
        if all(p["lag"] == 0 for p in health["projections"].values()):
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


def test_the_tour_parses_into_numbered_blocks_that_start_with_the_server() -> None:
    steps = tour(README)
    assert [s.number for s in steps] == list(range(1, len(steps) + 1))
    assert len(steps) >= 6
    assert steps[0].script.rstrip().endswith("scripts/serve")
    assert TOUR_STORE in steps[0].script and "SINCH_WEBHOOK_SECRET=" in steps[0].script
    assert all("scripts/serve" not in s.script for s in steps[1:])
    # Each shown answer is one the comparison can read.
    for step in steps:
        if step.shown_kind == "json":
            assert step.shown is not None
            json.loads(step.shown)


def test_matches_reads_variable_values_and_allows_more_fields() -> None:
    assert matches({"a": "...", "b": [1]}, {"a": 3, "b": [1], "c": None})
    assert matches({"key": "clk_..."}, {"key": "clk_abc"})
    assert not matches({"key": "clk_..."}, {"key": "xyz"})
    assert not matches({"a": 1}, {"a": 2})
    assert not matches({"a": 1}, {})
    assert not matches({"b": [1]}, {"b": [1, 2]})
    assert lines_match("x ... y\nz", "a\nx 1 y\nb\nz\n")
    assert not lines_match("z\nx ... y", "x 1 y\nz\n")


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    steps = tour(README)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = f"sqlite:///{tmp_path}/tour.sqlite3"

    def as_here(text: str) -> str:
        return text.replace(DEFAULT_URL, url).replace(TOUR_STORE, store)

    env = user_env()
    server_script = re.sub(
        r"^scripts/serve$", f"scripts/serve --port {port}", as_here(steps[0].script), flags=re.M
    )
    server = TerminalServer(server_script, env)
    shell = Shell(env, tmp_path)
    try:
        wait_until_listening(server, url)
        time.sleep(0.5)  # the start-up lines after the socket opens
        assert steps[0].shown is not None
        assert lines_match(as_here(steps[0].shown), server.output), server.output
        admin_key = printed_key(server.output)
        assert admin_key, server.output
        appended = 0  # events the webhook's answers say it appended
        for step in steps[1:]:
            wait_for_projections(url, admin_key)
            status, out, err = shell.run(step, as_here(step.script))
            where = f"tour block {step.number}: {out}{err}"
            assert status == 0, where
            assert not err, where
            if step.shown_kind == "json":
                assert step.shown is not None
                actual = orjson.loads(out)
                assert matches(json.loads(as_here(step.shown)), actual), where
                if "trigger" in actual:  # the webhook's answer
                    appended += actual["events"]
            elif step.shown_kind == "text":
                assert step.shown is not None
                assert lines_match(as_here(step.shown), out), where
    finally:
        shell.close()
        server.stop()
    # The tour's commands used the store the server was given, and nothing in the worktree;
    # the log holds what the answers acknowledged, the resend and the replay added nothing.
    assert not (ROOT / "tour.sqlite3").exists()
    with closing(sqlite3.connect(tmp_path / "tour.sqlite3")) as db:
        assert db.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0] == appended > 0
