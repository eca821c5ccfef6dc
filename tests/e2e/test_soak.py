"""The soak's short form: distinct signed callbacks in slices at a real `serve`, on both
backends, every acknowledged delivery fact stored. The long run is `scripts/soak`
(docs/performance.md) and a larger one here under --slow."""

from __future__ import annotations

import pytest

from scripts import soak


def test_a_short_soak_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert soak.main(["--callbacks", "3000", "--chatty", "300", "--slices", "2"]) == 0
    out = capsys.readouterr().out
    assert "postgres: 3,000 callbacks, non-2xx 0" in out
    assert "sqlite: 3,000 callbacks, non-2xx 0" in out
    assert out.count("(lost 0)") == 2


@pytest.mark.slow
def test_a_longer_soak_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert soak.main(["--callbacks", "200000", "--chatty", "10000", "--slices", "4"]) == 0
    print(capsys.readouterr().out)
