"""`callback-ledger replay`: rebuilds projections from the first event into fresh tables, then
switches the views to them in one transaction, so queries keep answering during the rebuild.

Interrupt it at any time (Ctrl-C, kill): run it again and it resumes from the last committed
page; `--fresh` starts over. Progress (events, events/s, ETA) shows on a terminal.

With `jobs` above 1 (PostgreSQL), the messages projection is built by that many processes, each
taking its share of the message streams, while this process builds the rest.

`Rebuild` is the machinery (the generation being built, its parts, its switch); `replay` the
command's driver over it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import get_context
from multiprocessing.connection import wait

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from projections.faults import clear_faults, unreachable
from projections.projector import Projector
from projections.read_ahead import ReadAhead
from projections.schema import drop_generation, point_views
from service.runtime import Runtime
from store.config import Settings, collect_less_often
from store.db import Cursor

SPLIT = "messages"  # the projection worth splitting: nearly every event is one of its


class Rebuild:
    """Fills the next generation of a projection from the first event while the live one keeps
    answering, then switches the views to it. Its position lives beside the live one in
    `ledger_projections` (building_generation, building_position), so it resumes."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def start(self, name: str, fresh: bool = False) -> tuple[int, int]:
        """The generation being built and its position: a new one, or the interrupted one
        (unless `fresh`), so an interrupted replay resumes where it stopped."""
        projection = self.projector.projections[name]
        with self.projector.locked(name) as (cur, row):
            building = row["building_generation"]
            if building is not None and not fresh:
                return int(building), int(row["building_position"])
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (name,))
            if building is not None:
                drop_generation(cur, projection, int(building))
            building = int(row["generation"]) + 1
            drop_generation(cur, projection, building)
            # Secondary indexes come at the switch: filling a table without them is faster.
            for statement in projection.schema(building):
                if not statement.startswith("CREATE INDEX"):
                    cur.execute(statement)
            cur.execute(
                "UPDATE ledger_projections SET building_generation = ?, building_position = 0 "
                "WHERE name = ?",
                (building, name),
            )
            return building, 0

    def step(self, name: str) -> int:
        """One page into the generation being built; its new position."""
        return self.steps([name])[name]

    def steps(self, names: Sequence[str]) -> dict[str, int]:
        """One page of the log, read once, into every generation being built (a replay of
        all projections is one pass over the log); their new positions."""
        return self.projector.apply_next_page(names, building=True)

    def build_all(self, names: Sequence[str], stop: int | None = None) -> Iterator[int]:
        """Fills the generations being built up to the head, page by page as `steps`;
        yields the lowest position after each page. The next page is read and decoded on a
        second connection, in a thread, while this one is written, so PostgreSQL and Python
        work at the same time. That page is the one the transaction would read: the log only
        grows, and ids become visible in order (the library inserts under a table lock)."""
        projector = self.projector
        after = min(projector.position(name, "building_position") for name in names)
        # With `stop` (PostgreSQL), up to that id and only the events of `names`, filtered in the
        # database: for projections whose events are few, built beside a split one.
        part = None if stop is None else (0, 1)
        size, topics = projector.page_size, projector.topics(names)
        pages = ReadAhead(projector.db, projector.log, after, size, topics, stop, part)
        with pages:
            for page in pages:
                yield min(projector.apply_next_page(names, building=True, page=page).values())

    def plan_parts(self, name: str, jobs: int) -> int | None:
        """How many parts the rebuild of `name` under way is split into: the number an
        interrupted split rebuild was started with (it resumes as it was split, whatever
        `jobs`), else `jobs` if above 1 and the rebuild has not started (its parts are then
        set up at its position), else None: one process."""
        with self.projector.locked(name) as (cur, row):
            found = cur.execute(
                "SELECT MAX(parts) AS parts FROM ledger_replay_parts WHERE name = ?", (name,)
            ).fetchone()
            if found and found["parts"]:
                return int(found["parts"])
            if jobs < 2 or row["building_position"] != 0 or not cur.backend.several_writers:
                return None
            for part in range(jobs):
                cur.execute(
                    "INSERT INTO ledger_replay_parts (name, part, parts, position) "
                    "VALUES (?, ?, ?, 0)",
                    (name, part, jobs),
                )
            return jobs

    def build_part(self, name: str, part: int, parts: int, stop: int) -> Iterator[int]:
        """Fills part `part` of `parts` of the generation being built, up to notification id
        `stop`, one page per transaction with the part's own position; yields it. A stream's
        events are all in one part, so parts in separate processes never write the same row
        (PostgreSQL only; see `plan_parts`, `join_parts`)."""
        projector = self.projector
        projection = projector.projections[name]
        generation = projector.position(name, "building_generation")
        after = self._part_position(name, part)
        size = projector.page_size
        pages = ReadAhead(
            projector.db, projector.log, after, size, projection.topics, stop, (part, parts)
        )
        with pages:
            for page in pages:
                with projector.db.transaction() as cur:
                    position = self._part_position(name, part, cur)
                    if page.after == position:
                        last, events = page.last, page.events
                    else:  # another process moved this part: read from where it is
                        last, events = projector.log.part_page(
                            cur, position, size, projection.topics, stop, part, parts
                        )
                    if events:
                        projection.apply(cur, generation, events)
                    cur.execute(
                        "UPDATE ledger_replay_parts SET position = ? WHERE name = ? AND part = ?",
                        (max(last, position), name, part),
                    )
                yield max(last, position)

    def _part_position(self, name: str, part: int, cur: Cursor | None = None) -> int:
        sql = "SELECT position FROM ledger_replay_parts WHERE name = ? AND part = ?"
        if cur is not None:
            row = cur.execute(sql + " FOR UPDATE", (name, part)).fetchone()
        else:
            with self.projector.db.read() as reader:
                row = reader.execute(sql, (name, part)).fetchone()
        if row is None:
            raise LookupError(f"part {part} of the rebuild of {name!r} is not set up")
        return int(row["position"])

    def part_positions(self, name: str) -> list[int]:
        with self.projector.db.read() as cur:
            rows = cur.execute(
                "SELECT position FROM ledger_replay_parts WHERE name = ?", (name,)
            ).fetchall()
        return [int(row["position"]) for row in rows] or [0]

    def join_parts(self, name: str, stop: int) -> None:
        """Once every part has been built up to `stop`: the rebuild of `name` goes on from
        `stop` as one (`finish`)."""
        with self.projector.locked(name) as (cur, _):
            cur.execute(
                "UPDATE ledger_projections SET building_position = ? WHERE name = ?", (stop, name)
            )
            cur.execute("DELETE FROM ledger_replay_parts WHERE name = ?", (name,))

    def finish(self, name: str) -> int:
        """Catches the new generation up to the head and switches the views to it, in one
        transaction holding the live follower off; then drops the old tables."""
        projector = self.projector
        projection = projector.projections[name]
        with projector.locked(name) as (cur, row):
            generation, position = int(row["building_generation"]), int(row["building_position"])
            while True:
                last, events = projector.log.page(
                    cur, position, projector.page_size, projection.topics
                )
                if events:
                    projection.apply(cur, generation, events)
                if last == position:
                    break
                position = last
            for statement in projection.schema(generation):
                if statement.startswith("CREATE INDEX"):
                    cur.execute(statement)
            old = int(row["generation"])
            cur.execute(
                "UPDATE ledger_projections SET generation = ?, position = ?, "
                "building_generation = NULL, building_position = NULL WHERE name = ?",
                (generation, position, name),
            )
            point_views(cur, projection, generation)
            # Rebuilt from the first event: whatever was missing or stuck is behind it now.
            clear_faults(cur, name)
        with projector.db.transaction() as cur:
            drop_generation(cur, projection, old)
        return position


def run_part(settings: Settings, part: int, parts: int, stop: int, page_size: int) -> None:
    """One part of the messages rebuild, in a process of its own."""
    collect_less_often()
    runtime = Runtime(settings)
    try:
        projector = runtime.projector()
        projector.page_size = page_size
        for _ in Rebuild(projector).build_part(SPLIT, part, parts, stop):
            pass
    finally:
        runtime.close()


def build_split(
    rebuild: Rebuild,
    settings: Settings,
    names: list[str],
    parts: int,
    head: int,
    page_size: int,
    show: Callable[[int], None],
) -> None:
    """The messages projection by `parts` processes up to `head`, the other `names` here
    meanwhile. Stopped or failed, it stops its processes too; a rerun resumes."""
    spawn = get_context("spawn")  # no pool connections inherited across a fork
    # Pages of page_size / parts each: together about the memory of one process.
    size = max(1, page_size // parts)
    workers = [
        spawn.Process(
            target=run_part,
            args=(settings, part, parts, head, size),
            name=f"replay part {part + 1} of {parts}",
        )
        for part in range(parts)
    ]
    for worker in workers:
        worker.start()
    try:
        rest = [name for name in names if name != SPLIT]
        for position in rebuild.build_all(rest, head) if rest else ():
            show(position)
        while running := [w.sentinel for w in workers if w.is_alive()]:
            wait(running, timeout=0.5)
            show(min(rebuild.part_positions(SPLIT)))
        failed = [w.name for w in workers if w.exitcode != 0]
        if failed:
            raise RuntimeError(
                f"{', '.join(failed)} failed (see above); run the replay again to resume it"
            )
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join()


def replay(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    fresh: bool = False,
    page_size: int = 5000,
    jobs: int = 1,
    console: Console | None = None,
) -> dict[str, dict[str, float]]:
    """Rebuilds the named projections (all by default); returns events and seconds for each."""
    if jobs > 1 and not settings.store_backend().several_writers:
        raise SystemExit("--jobs above 1 needs PostgreSQL: SQLite takes one writer at a time")
    console = console or Console(stderr=True)
    runtime = Runtime(settings)
    try:
        projector = runtime.projector()
        projector.page_size = page_size
        rebuild = Rebuild(projector)
        names = list(names or projector.projections)
        unknown = sorted(set(names) - set(projector.projections))
        if unknown:
            raise SystemExit(
                f"unknown projection(s): {', '.join(unknown)}; "
                f"known: {', '.join(projector.projections)}"
            )
        head = runtime.ledger().ping()
        results: dict[str, dict[str, float]] = {}
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9,.0f} events/s"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        with progress:
            started = time.perf_counter()
            building = {name: rebuild.start(name, fresh=fresh) for name in names}
            position = min(pos for _, pos in building.values())
            resumed_from = position
            task = progress.add_task(
                f"replay {', '.join(names)}", total=max(head, 1), completed=position, rate=0.0
            )

            def show(position: int) -> None:
                elapsed = time.perf_counter() - started
                progress.update(
                    task,
                    completed=min(position, head),
                    rate=(position - resumed_from) / max(elapsed, 1e-9),
                )

            parts = rebuild.plan_parts(SPLIT, jobs) if SPLIT in names else None
            try:
                if parts is None:
                    for position in rebuild.build_all(names):
                        show(position)
                else:
                    build_split(rebuild, settings, names, parts, head, page_size, show)
                    rebuild.join_parts(SPLIT, head)
            except Exception as exc:
                if unreachable(exc):
                    raise
                why = projector.explain(names, exc, building=True)
                raise SystemExit(
                    f"replay stopped: {why}. Fix the cause and run the replay again: it resumes"
                ) from exc
            for name in names:
                generation = building[name][0]
                final = rebuild.finish(name)
                results[name] = {
                    "events": final - building[name][1],
                    "seconds": time.perf_counter() - started,
                    "generation": generation,
                }
                if not console.is_terminal:
                    console.print(
                        f"{name}: rebuilt generation {generation} from "
                        f"{final - building[name][1]} events in "
                        f"{results[name]['seconds']:.1f}s; views switched"
                    )
            progress.update(task, completed=head)
        return results
    finally:
        runtime.close()


if __name__ == "__main__":
    replay(Settings.from_env(), sys.argv[1:] or None)
