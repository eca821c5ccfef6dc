"""The layers import downwards only: the README's Layout, held against the code. Inside a
folder, no module imports one that imports it back; only the backends import a database
driver."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: a package may import its own modules and those of the packages before it.
LAYERS = (
    "domain",
    "store",
    "projections",
    "access",
    "privacy",
    "evidence",
    "service",
    "api",
    "callback_ledger",
)
# Rooms on one floor: none imports another.
SIDE_BY_SIDE = {"access", "privacy", "evidence"}
DRIVERS = {"sqlite3", "psycopg", "psycopg_pool"}


def product_files() -> Iterator[Path]:
    for package in LAYERS:
        yield from sorted((ROOT / package).rglob("*.py"))


def is_backend(path: Path) -> bool:
    """The backends: the store's modules named for their database (store/sqlite*.py,
    store/postgres*.py)."""
    return path.parent.name == "store" and ("sqlite" in path.stem or "postgres" in path.stem)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def type_checking_only(tree: ast.Module) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`: they never run."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }


def imported(path: Path, running: bool) -> set[str]:
    """Every module name an import of this file names (for `from a import b`: a and a.b).
    With `running`, only the imports that run: at module level or inside a function, not
    those only a type checker reads."""
    tree = ast.parse(path.read_text(), str(path))
    skip = type_checking_only(tree) if running else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported(path, running=False)} & set(LAYERS)


def test_no_package_imports_one_above_it() -> None:
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for found in imported_packages(path):
                beside = {package, found} <= SIDE_BY_SIDE and found != package
                if LAYERS.index(found) > rank or beside:
                    upward.append(f"{path.relative_to(ROOT)} imports {found}")
    assert upward == []


def test_the_domain_imports_no_store_nor_io() -> None:
    io = {"sqlite3", "psycopg", "starlette", "uvicorn", "httpx", "os", "socket"}
    for path in sorted((ROOT / "domain").rglob("*.py")):
        names = {name.split(".")[0] for name in imported(path, running=False)}
        assert not names & io, f"{path.name} imports {sorted(names & io)}"


def test_only_the_backends_import_a_database_driver() -> None:
    """Anything else asks the backend (store.backend), even for a type."""
    outside = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in product_files()
        if not is_backend(path)
        for name in sorted(imported(path, running=False))
        if name.split(".")[0] in DRIVERS
    ]
    assert outside == []


def folder_graph(running: bool) -> dict[str, set[str]]:
    """Each module's imports of modules in its own folder."""
    paths = {module_name(path): path for path in product_files()}
    return {
        name: {
            other
            for other in imported(path, running)
            if other in paths and other != name and paths[other].parent == path.parent
        }
        for name, path in paths.items()
    }


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    reach = {name: reachable(graph, name) for name in graph}
    return sorted(
        {
            tuple(sorted(n for n in reach[name] if name in reach[n]))
            for name in graph
            if name in reach[name]
        }
    )


def test_no_import_circle_inside_a_folder() -> None:
    """Counting the imports that run: at module level or inside a function (one there only
    moves the circle to the first call)."""
    assert circles(folder_graph(running=True)) == []


FOLDERS = sorted({str(path.parent.relative_to(ROOT)) for path in product_files()})


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_import_circle_inside_a_folder_even_for_types(folder: str) -> None:
    """Counting also the imports only a type checker reads (`if TYPE_CHECKING:`)."""
    found = circles(folder_graph(running=False))
    assert [c for c in found if c[0].rsplit(".", 1)[0] == folder.replace("/", ".")] == []


def test_the_circle_check_counts_what_runs(tmp_path: Path) -> None:
    module = tmp_path / "x.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from a import t\n"
        "def f() -> None:\n    from a import y\n"
    )
    assert imported(module, running=True) == {"typing", "typing.TYPE_CHECKING", "a", "a.y"}
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert {name for name in graph if name in reachable(graph, name)} == {"a.x", "a.y", "a.z"}
