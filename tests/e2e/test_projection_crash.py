"""Kill the projection worker (`callback-ledger project`) with SIGKILL between and inside
pages, many times: the rows it finally builds equal a replay from scratch, and its position
ends at the head (nothing skipped; a page is applied with its position or not at all). Kill a
replay split across processes the same way: resumed, its rows equal a one-process replay."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from projections.projector import Projector
from projections.rebuild import Rebuild
from service.replay import replay
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import fresh_database
from tests.helpers import KEYS, accept_all, projection_rows

pytestmark = pytest.mark.xdist_group("projection_crash")  # one recording per backend, shared

STATUSES = ["QUEUED_ON_CHANNEL", "DELIVERED", "READ", "FAILED", "SWITCHING_CHANNEL"]


def workload(n: int) -> list[dict]:
    rng = random.Random(11)
    bodies = []
    for i in range(n):
        kind = rng.random()
        second = f"2024-06-15T10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        if kind < 0.8:
            bodies.append(
                p.delivery(
                    f"M{i // 3}", STATUSES[i % 5], rng.choice(["SMS", "RCS"]), event_time=second
                )
            )
        elif kind < 0.9:
            bodies.append(
                p.inbound(
                    f"IN{i}",
                    rng.choice(["STOP", "START", "hi"]),
                    contact_id=f"C{i % 7}",
                    event_time=second,
                )
            )
        else:
            bodies.append(
                p.opt(
                    rng.choice(["OPT_IN", "OPT_OUT"]),
                    contact_id=f"C{i % 7}",
                    request_id=f"R{i}",
                    event_time=second,
                )
            )
    return bodies


@pytest.fixture(scope="module")
def logged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """`logged(backend)`: the URL of a store holding workload(1500), recorded once per backend
    for this module's tests, which each work on a copy of it."""
    urls: dict[str, str] = {}
    with ExitStack() as stack:

        def log(backend: str) -> str:
            if backend not in urls:
                made = contextmanager(fresh_database)(backend, tmp_path_factory, request)
                url = stack.enter_context(made)
                runtime = Runtime(Settings(keys=KEYS, database_url=url))
                try:
                    accept_all(runtime.ledger(), workload(1500))
                finally:
                    runtime.close()
                urls[backend] = url
            return urls[backend]

        yield log


@pytest.fixture
def database_url(backend: str, logged: Callable[[str], str], copy_store) -> str:
    """A store of this test's own holding workload(1500), not yet projected."""
    return copy_store(logged(backend))


def paging(worker: subprocess.Popen[bytes], projector: Projector) -> None:
    """Returns once `worker` has applied a page, or ended."""
    before = {name: pos["position"] for name, pos in projector.positions().items()}
    deadline = time.monotonic() + 60
    while worker.poll() is None and time.monotonic() < deadline:
        now = {name: pos["position"] for name, pos in projector.positions().items()}
        if now != before:
            return
        time.sleep(0.02)


def test_killed_worker_resumes_without_gaps(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "callback_ledger.cli", "project", "--once"]
    runtime = Runtime(settings, ledger)
    projector = runtime.projector()
    rng = random.Random(5)
    kills = 0
    for _ in range(8):
        worker = subprocess.Popen(
            [*command, "--page-size", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Killed at a random moment while it applies pages, not while Python starts.
        paging(worker, projector)
        time.sleep(rng.uniform(0, 1))
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            kills += 1
        worker.wait()
    # What the kills left, in pages of the default size.
    subprocess.run(command, env=env, check=True, timeout=120)
    assert kills >= 1, "the worker finished before any kill: make the workload larger"

    positions = projector.positions()
    runtime.close()
    assert all(pos["lag"] == 0 for pos in positions.values()), positions
    built = projection_rows(database_url)
    replay(settings)
    assert projection_rows(database_url) == built


REPLAY = [sys.executable, "-m", "callback_ledger.cli", "replay", "--page-size", "4"]


def replayed(settings: Settings, database_url: str) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The log replayed once: its rows, and the environment to run `callback-ledger` on it."""
    replay(settings)
    return projection_rows(database_url), {**os.environ, "LEDGER_DATABASE_URL": database_url}


def start_split_replay(env: dict[str, str], projector: Projector) -> subprocess.Popen[bytes]:
    """`replay --jobs 2` in a process group of its own (a signal to the group reaches its
    parts), returned once its parts are building, or it ended."""
    run = subprocess.Popen(
        [*REPLAY, "--jobs", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline:
        if max(Rebuild(projector).part_positions("messages")) > 0:
            break
        time.sleep(0.02)
    return run


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_killed_split_replay_resumes_as_it_was_split(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    expected, env = replayed(settings, database_url)
    runtime = Runtime(settings, ledger)
    projector = runtime.projector()
    rng = random.Random(7)
    kills, parts = 0, [0]
    # Until two kills landed, the last one in the middle of a split (a kill can also land
    # between the parts and the switch; the next run then finishes without parts).
    for _ in range(10):
        run = start_split_replay(env, projector)
        time.sleep(rng.uniform(0, 0.1))
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            kills += 1
        run.wait()
        parts = Rebuild(projector).part_positions("messages")
        if kills >= 2 and len(parts) == 2:
            break
    runtime.close()
    assert kills >= 2 and len(parts) == 2, "no kill landed while the parts were building"
    # One process asked for: an interrupted split replay still resumes split.
    subprocess.run(REPLAY, env=env, check=True, timeout=300)
    assert projection_rows(database_url) == expected


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_sigterm_to_a_split_replay_stops_its_parts(
    ledger: Ledger, settings: Settings, database_url: str
) -> None:
    expected, env = replayed(settings, database_url)
    runtime = Runtime(settings, ledger)
    run = start_split_replay(env, runtime.projector())
    assert run.poll() is None, "the replay finished before SIGTERM: make the workload larger"
    run.terminate()  # the main process only
    assert run.wait(timeout=30) != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(run.pid, 0)  # anything left of its process group?
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(run.pid, signal.SIGKILL)
        raise AssertionError("part processes outlived the replay they belong to")
    runtime.close()
    subprocess.run(REPLAY, env=env, check=True, timeout=300)
    assert projection_rows(database_url) == expected
