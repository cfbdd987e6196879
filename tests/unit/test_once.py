"""`Once`: the lazily built SDK clients of the hosts are made once, and made again only after forget."""

from __future__ import annotations

import threading

from modelrepo.once import Once


def test_the_value_is_made_on_the_first_get_and_kept() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    once = Once(make)
    assert made == []  # nothing is made before it is asked for
    first = once.get()
    assert once.get() is first and made == [first]
    assert once.forget() is first  # handed back to be released
    second = once.get()
    assert second is not first and made == [first, second]


def test_threads_asking_together_get_the_one_value() -> None:
    release = threading.Event()
    calls: list[int] = []

    def make() -> object:
        calls.append(1)
        release.wait(30)  # the others ask while the first is still making it
        return object()

    once = Once(make)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(once.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1 and len(got) == 8 and len({id(value) for value in got}) == 1
