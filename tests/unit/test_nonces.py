"""The signature nonce memory: kept while the signature could still be accepted, bounded,
expired in timestamp order, linear in the callbacks it sees, compact."""

from __future__ import annotations

import tracemalloc

from api.webhook import NonceMemory

START = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


def test_300_000_nonces_stay_linear_and_bounded() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)  # each nonce kept until its timestamp + 300 s
    rate = 100  # callbacks per second, each signed at its arrival: 30,100 live at most
    largest = 0
    for i in range(300_000):
        memory.remember(f"n{i}", int(clock.now))
        clock.now += 1 / rate
        largest = max(largest, len(memory))
        if i == 1000:
            assert memory.seen("n10", START), "a replay within the window is still detected"
    assert largest <= rate * 301
    # Every nonce is dropped once, by expiry, and none early: the work is one drop per nonce.
    assert memory.expired + len(memory) == 300_000
    assert memory.evicted == 0
    assert not memory.seen("n0", START)  # its window passed
    assert memory.seen("n299999", int(clock.now - 1 / rate))
    clock.now += 301
    memory.remember("last", int(clock.now))
    assert len(memory) == 1


def test_a_replay_is_detected_until_its_signature_expires() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)
    memory.remember("a", START)
    clock.now += 300  # the signature is still accepted (|timestamp - now| <= 300)
    assert memory.seen("a", START)
    memory.remember("b", int(clock.now))  # expiry runs: "a" must stay
    assert memory.seen("a", START)
    clock.now += 0.5  # from here the signature itself is refused as stale
    assert not memory.seen("a", START)
    memory.remember("c", int(clock.now))
    assert len(memory) == 2  # "a" was dropped, "b" and "c" are kept
    assert not memory.seen("never", int(clock.now))


def test_the_same_nonce_with_another_timestamp_is_another_signature() -> None:
    """A replay repeats the timestamp (the signature covers it): a nonce is looked up in its
    timestamp's second only."""
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)
    memory.remember("a", START)
    assert memory.seen("a", START)
    assert not memory.seen("a", START - 1)


def test_a_signature_from_ahead_of_our_clock_is_kept_until_it_expires() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)
    ahead = START + 300  # a sender whose clock is 300 s ahead: accepted now
    memory.remember("a", ahead)
    clock.now += 599
    memory.remember("b", int(clock.now))
    assert memory.seen("a", ahead)  # it can still be accepted for one more second
    clock.now += 1.5
    memory.remember("c", int(clock.now))
    assert not memory.seen("a", ahead)
    assert memory.expired == 1


def test_a_stale_signature_is_not_remembered() -> None:
    """Remembered after the commit, which may end after the window: it can never be accepted
    again, so there is nothing to keep."""
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)
    clock.now += 301
    memory.remember("a", START)
    assert len(memory) == 0


def test_a_nonce_remembered_twice_counts_once() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=10, clock=clock)
    memory.remember("a", START)  # two requests with one nonce that both passed the check
    memory.remember("a", START)
    assert len(memory) == 1
    clock.now += 2  # packed
    memory.remember("b", int(clock.now))
    memory.remember("a", START)
    assert len(memory) == 2
    assert memory.seen("a", START)


def test_over_the_cap_the_oldest_seconds_are_dropped() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, cap=1000, clock=clock)
    for i in range(5000):  # 100 a second
        memory.remember(f"n{i}", int(clock.now))
        clock.now += 0.01
    assert len(memory) <= 1000
    assert memory.evicted == 5000 - len(memory)
    assert memory.expired == 0
    assert not memory.seen("n3899", START + 38)
    assert memory.seen("n4999", START + 49)


def test_nonces_are_found_after_packing_and_while_a_second_is_written() -> None:
    clock = Clock()
    memory = NonceMemory(window_s=300, clock=clock)
    for i in range(20_000):  # one second written long enough to be packed as it grows
        memory.remember(f"n{i}", START)
    clock.now += 0.5
    for i in range(20_000, 30_000):
        memory.remember(f"n{i}", START + 1)
    clock.now += 2  # both seconds idle: packed
    memory.remember("x", int(clock.now))
    assert all(memory.seen(f"n{i}", START) for i in range(0, 20_000, 7))
    assert all(memory.seen(f"n{i}", START + 1) for i in range(20_000, 30_000, 7))
    assert not any(memory.seen(f"m{i}", START) for i in range(20_000))
    assert len(memory) == 30_001


def test_a_nonce_costs_a_few_bytes() -> None:
    """200,000 live nonces at 2,000 a second, measured with tracemalloc: a 64-bit key each in a
    sorted array once its second is written (170 bytes each as strings in an OrderedDict)."""
    clock = Clock()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        memory = NonceMemory(window_s=300, clock=clock)
        for i in range(200_000):
            memory.remember(f"po000{i:020d}", int(clock.now))
            clock.now += 1 / 2000
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(memory) == 200_000
    assert used / len(memory) < 24
