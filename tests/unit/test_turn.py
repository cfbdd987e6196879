"""The per-experiment turn that keeps one process's registrations from racing each other."""

from __future__ import annotations

import threading
import time

from modelrepo.service import _Turn


def test_turn_is_handed_to_waiters_in_arrival_order() -> None:
    turn = _Turn()
    assert turn.acquire(timeout=1)
    order: list[int] = []
    threads = []

    def take(number: int) -> None:
        assert turn.acquire(timeout=5)
        order.append(number)
        turn.release()

    for number in range(5):
        thread = threading.Thread(target=take, args=(number,))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # each waiter queues before the next one starts
    turn.release()
    for thread in threads:
        thread.join(timeout=5)
    assert order == [0, 1, 2, 3, 4]


def test_a_waiter_that_times_out_leaves_the_queue_and_the_turn_usable() -> None:
    turn = _Turn()
    assert turn.acquire(timeout=1)
    began = time.monotonic()
    assert turn.acquire(timeout=0.1) is False
    assert 0.09 <= time.monotonic() - began < 1
    turn.release()
    assert turn.acquire(timeout=0.1)  # free again: the timed-out waiter is not holding it
    turn.release()
