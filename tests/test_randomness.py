"""Ids' random bytes: the OS's, drawn in bulk, never handed out twice - across threads
and across forked workers."""

from __future__ import annotations

import os
import threading

import pytest

from mlgate import randomness
from mlgate.api.middleware import new_request_id
from mlgate.dataplane.ids import new_key


def test_one_draw_from_the_os_serves_many_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    real = os.urandom

    def counted(n: int) -> bytes:
        draws.append(n)
        return real(n)

    monkeypatch.setattr(randomness.os, "urandom", counted)
    randomness._POOL.reset()
    ids = [new_request_id() for _ in range(200)] + [new_key() for _ in range(200)]
    assert len(set(ids)) == 400
    assert draws == [randomness.POOL_BYTES] * ((200 * 16 + 200 * 10) // 4096 + 1)
    assert randomness.random_bytes(5000) != randomness.random_bytes(5000)  # past the pool


def test_threads_never_share_bytes() -> None:
    taken: list[bytes] = []

    def take() -> None:
        for _ in range(2000):
            taken.append(randomness.random_bytes(16))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(taken)) == len(taken) == 8000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_draws_its_own_bytes() -> None:
    randomness.random_bytes(16)  # the parent's pool holds bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it takes next
        os.write(write, randomness.random_bytes(64))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != randomness.random_bytes(64)  # the parent's next bytes differ
