"""README's Layout lists the modules a callback crosses; `scripts/paths.py` traces them. The
two must agree, and every call goes down the layers but the one the README names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The domain names a channel identity through the function the store hands it.
PORT = ("domain/contact.py", "store/vault.py")


def readme_paths() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text()
    found = re.findall(r"<!-- path:(\w+) -->\n(.*?)<!-- /path -->", readme, re.S)
    return {name: [line.split()[0] for line in block.splitlines()] for name, block in found}


def test_readme_lists_each_module_a_callback_crosses_and_calls_go_down() -> None:
    traced = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "scripts/paths.py"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(traced.stdout)
    listed = readme_paths()
    assert set(listed) == {"webhook", "projection"}
    for name in listed:
        assert sorted(listed[name]) == sorted(found[name]), name
    for stack in found["returns"]:
        entered = [i for i, module in enumerate(stack) if module.startswith("store/")]
        below = [m for m in stack[entered[0] :] if not m.startswith("store/")] if entered else []
        assert below and all(m == PORT[0] for m in below) and stack[-1] == PORT[1], stack
