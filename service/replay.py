"""`callback-ledger replay`: rebuilds projections from the first event (projections/rebuild.py)
with progress on a terminal; with `jobs` above 1 (PostgreSQL), the messages projection is built
by that many processes, each its share of the streams. Interrupted, a rerun resumes from the
last committed page; `--fresh` starts over."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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

from projections.rebuild import SPLIT, Rebuild
from service.runtime import Runtime
from service.settings import Settings, collect_less_often
from store.backend import store_unavailable


def run_part(settings: Settings, part: int, parts: int, stop: int, page_size: int) -> None:
    """One part of the messages rebuild, in a process of its own."""
    collect_less_often()
    with Runtime(settings) as runtime:
        projector = runtime.projector()
        projector.page_size = page_size
        for _ in Rebuild(projector).build_part(SPLIT, part, parts, stop):
            pass


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
    with Runtime(settings) as runtime:
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
            resumed_from = min(pos for _, pos in building.values())
            task = progress.add_task(
                f"replay {', '.join(names)}", total=max(head, 1), completed=resumed_from, rate=0.0
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
                # The catch-up to the head reads events written since: it can meet the same
                # faults as the build.
                finals = {name: rebuild.finish(name) for name in names}
            except Exception as exc:
                if store_unavailable(runtime.backend, exc):
                    raise
                why = projector.explain(names, exc, building=True)
                raise SystemExit(
                    f"replay stopped: {why}. Fix the cause and run the replay again: it resumes"
                ) from exc
            for name, (generation, first) in building.items():
                events, seconds = finals[name] - first, time.perf_counter() - started
                results[name] = {"events": events, "seconds": seconds, "generation": generation}
                if not console.is_terminal:
                    console.print(
                        f"{name}: rebuilt generation {generation} from {events} events in "
                        f"{seconds:.1f}s; views switched"
                    )
            progress.update(task, completed=head)
        return results
