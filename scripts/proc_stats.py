"""CPU, memory and I/O of processes and of the machine, read from Linux's /proc."""

from __future__ import annotations

import os


def _cpu_of(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds so far) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> tuple[dict[int, float], float]:
    """CPU seconds used so far by every process, each counting its live descendants too (as
    for uvicorn --workers), and by all PostgreSQL processes together."""
    found: dict[int, tuple[int, float]] = {}
    postgres = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            found[pid] = _cpu_of(pid)
        except (OSError, IndexError, ValueError):
            continue  # it exited meanwhile
        if comm == "postgres":
            postgres += found[pid][1]
    totals = {pid: cpu for pid, (_, cpu) in found.items()}
    for parent, cpu in found.values():
        while parent in found:
            totals[parent] += cpu
            parent = found[parent][0]
    return totals, postgres


def cpu_split(
    before: tuple[dict[int, float], float], after: tuple[dict[int, float], float], pids: list[int]
) -> dict[str, float]:
    """CPU seconds between two readings: the receiver's processes (with their children) and
    PostgreSQL. The rest of the machine's is not reported: it includes wrk's start-up (reading
    the corpus), which would be charged to the callbacks."""
    (by_pid, postgres), (by_pid_after, postgres_after) = before, after
    server = sum(by_pid_after.get(pid, by_pid.get(pid, 0.0)) - by_pid.get(pid, 0.0) for pid in pids)
    return {"server": server, "postgres": postgres_after - postgres}


def tree_peaks_kb(root: int) -> dict[int, int]:
    """The peak resident memory so far (VmHWM, kB) of a process and each of its descendants."""
    parents: dict[int, int] = {}
    for pid in (int(e.name) for e in os.scandir("/proc") if e.name.isdigit()):
        try:
            parents[pid] = _cpu_of(pid)[0]
        except (OSError, IndexError, ValueError):
            continue
    tree, grown = {root}, True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    peaks: dict[int, int] = {}
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as f:
                peaks[pid] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
    return peaks


def tree_rss_mb(root: int) -> float:
    """RSS of a process and its children (the server's workers), from /proc."""
    total, pids = 0, [root]
    while pids:
        pid = pids.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return total / 1024


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used, from /proc; 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    found, pids = [], [root]
    while pids:
        pid = pids.pop()
        found.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return found


class CpuMeter:
    """CPU seconds used since the last reading, per group of processes (the server's tree, the
    database's backends); a process that started in between counts whole."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}

    def used(self, pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            now = cpu_s(pid)
            total += now - self.last.get(pid, 0.0)
            self.last[pid] = now
        return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat:
    with the server's and the database's own, what other work took from the run."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def written_bytes(pids: list[int]) -> int:
    """Bytes these processes caused to be written to storage (/proc/<pid>/io write_bytes)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, PermissionError):
            continue
    return total
