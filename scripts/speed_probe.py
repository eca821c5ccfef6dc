"""How fast this machine is right now, for long runs on a shared machine: a small process times a
fixed unit of Python work (JSON and arithmetic, about 20 ms) once a second. A slice of a soak
that ran while the machine was slower shows it in the probe's median, so a slower slice can be
told from a store that got slower: the soak prints each slice's probe and the last slice's rate
against the first's both as measured and scaled by their probes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

UNIT = """
import json, sys, time
data = {f"k{i}": [i, str(i) * 3, {"a": i, "b": [i, i + 1]}] for i in range(200)}
while True:
    start = time.perf_counter()
    for _ in range(15):
        json.loads(json.dumps(data))
    n = 0
    for i in range(40_000):
        n += i * i
    print((time.perf_counter() - start) * 1000, flush=True)
    time.sleep(1)
"""


class SpeedProbe:
    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", UNIT], stdout=subprocess.PIPE, text=True
        )
        self._samples: list[float] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._lock:
                self._samples.append(float(line))

    def take(self) -> float:
        """The median ms of the unit since the last call (waits for a first sample)."""
        deadline = time.monotonic() + 5
        while True:
            with self._lock:
                samples, self._samples = self._samples, []
            if samples or time.monotonic() > deadline:
                return statistics.median(samples) if samples else float("nan")
            time.sleep(0.1)

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()
