"""`callback-ledger replay`: rebuilds projections from the first event into fresh tables, then
switches the views to them in one transaction, so queries keep answering during the rebuild.

Interrupt it at any time (Ctrl-C, kill): run it again and it resumes from the last committed
page; `--fresh` starts over. Progress (events, events/s, ETA) shows on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from callback_ledger.config import Settings
from callback_ledger.runtime import Runtime


def replay(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    fresh: bool = False,
    page_size: int = 5000,
    console: Console | None = None,
) -> dict[str, dict[str, float]]:
    """Rebuilds the named projections (all by default); returns events and seconds for each."""
    console = console or Console(stderr=True)
    runtime = Runtime(settings)
    try:
        projector = runtime.projector()
        projector.page_size = page_size
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
            building = {name: projector.start_rebuild(name, fresh=fresh) for name in names}
            position = min(pos for _, pos in building.values())
            resumed_from = position
            task = progress.add_task(
                f"replay {', '.join(names)}", total=max(head, 1), completed=position, rate=0.0
            )
            for position in projector.build_all(names):
                elapsed = time.perf_counter() - started
                progress.update(
                    task,
                    completed=min(position, head),
                    rate=(position - resumed_from) / max(elapsed, 1e-9),
                )
            for name in names:
                generation = building[name][0]
                final = projector.finish_rebuild(name)
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
