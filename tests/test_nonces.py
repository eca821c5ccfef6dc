"""The signature nonce memory: bounded, expired in order, linear in the callbacks it sees."""

from __future__ import annotations

from callback_ledger.api.webhook import NonceMemory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_300_000_nonces_stay_linear_and_bounded() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)  # each nonce kept 600 s
    rate = 100  # callbacks per second: 60,000 live at most
    largest = 0
    for i in range(300_000):
        memory.remember(f"n{i}")
        clock.now += 1 / rate
        largest = max(largest, len(memory))
        if i == 1000:
            assert memory.seen("n10"), "a replay within the window is still detected"
    assert largest <= rate * 600 + 1
    # Every nonce is dropped once, by expiry, and none early: the work is one pop per nonce.
    assert memory.expired + len(memory) == 300_000
    assert memory.evicted == 0
    assert not memory.seen("n0")  # its window passed
    assert memory.seen("n299999")
    clock.now += 601
    memory.remember("last")
    assert len(memory) == 1


def test_a_replay_is_detected_until_its_window_passes() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)
    memory.remember("a")
    clock.now += 599
    assert memory.seen("a")
    clock.now += 1
    assert not memory.seen("a")
    assert not memory.seen("never")


def test_a_nonce_remembered_again_keeps_its_later_expiry() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=10, clock=clock)
    memory.remember("a")
    clock.now += 5
    memory.remember("b")
    clock.now += 5
    memory.remember("a")  # two requests with one nonce that both passed the check
    clock.now += 16  # past a's first expiry and b's, not a's second
    memory.remember("c")
    assert memory.seen("a")
    assert not memory.seen("b")
    assert len(memory) == 2  # b was dropped: a's new expiry did not stop the front


def test_over_the_cap_the_oldest_is_dropped() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, cap=1000, clock=clock)
    for i in range(5000):
        memory.remember(f"n{i}")
    assert len(memory) == 1000
    assert memory.evicted == 4000
    assert not memory.seen("n3999")
    assert memory.seen("n4000")
