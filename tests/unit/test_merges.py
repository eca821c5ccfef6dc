"""How merged contacts are grouped (projections.rules.merged_times): by the set of merges
alone, whatever their order, each two contacts from the time a chain of merges joined them."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from projections.rules import merged_times

CONTACTS = st.sampled_from("ABCDEF")
TIMES = st.sampled_from(["t1", "t2", "t3", "t4"])
MERGES = st.dictionaries(st.tuples(CONTACTS, CONTACTS), TIMES, max_size=8)


def joined_by(merges: dict[tuple[str, str], str], a: str, b: str, at: str) -> bool:
    """Whether merges made at or before `at` join a and b (a walk, for comparison)."""
    seen, todo = {a}, [a]
    while todo:
        here = todo.pop()
        for (x, y), when in merges.items():
            if when <= at and here in (x, y):
                other = y if here == x else x
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
    return b in seen


@given(MERGES, st.randoms())
def test_the_groups_depend_on_the_merges_alone(merges: dict, rnd: random.Random) -> None:
    merges = {k: v for k, v in merges.items() if k[0] != k[1]}
    shuffled = list(merges.items())
    rnd.shuffle(shuffled)
    times = merged_times(merges)
    assert merged_times(dict(shuffled)) == times
    for a in "ABCDEF":
        for b in "ABCDEF":
            if a == b:
                continue
            first = next((t for t in ["t1", "t2", "t3", "t4"] if joined_by(merges, a, b, t)), None)
            assert times.get((a, b)) == first
