"""The threads pool's consumer loop is woken every few ms (celery/celery#6941); prefork's is not."""

from __future__ import annotations

import time
from types import SimpleNamespace

from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadsPool
from kombu.asynchronous.timer import Timer

from worker.celery_app import THREADS_POOL_WAKE_SECONDS, _wake_the_consumer_loop


def test_a_threads_pool_consumer_gets_a_repeating_wake_up():
    pool = ThreadsPool(limit=2)
    timer = Timer()
    try:
        _wake_the_consumer_loop(sender=SimpleNamespace(pool=pool, timer=timer))
        assert len(timer.queue) == 1
        eta, _, entry = timer.queue[0]
        assert eta - time.monotonic() <= THREADS_POOL_WAKE_SECONDS
        entry()   # the loop comes round and runs it: it schedules the next one
        assert len(timer.queue) == 2
    finally:
        pool.executor.shutdown()
        timer.stop()


def test_a_prefork_consumer_is_left_alone():
    timer = Timer()
    _wake_the_consumer_loop(sender=SimpleNamespace(pool=PreforkPool(limit=2), timer=timer))
    assert timer.queue == []
