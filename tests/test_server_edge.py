"""The edge's pool of app threads: one job wakes one thread, the one idle most recently."""
from __future__ import annotations

import threading
import time

from modelarts_mnist.server.edge import AppThreads


def run(threads: AppThreads, job) -> None:
    done = threading.Event()
    threads.submit(lambda: (job(), done.set()))
    assert done.wait(5)


def test_the_thread_idle_most_recently_takes_the_next_job():
    threads = AppThreads(3)
    time.sleep(0.1)  # all three idle
    names = []
    for _ in range(5):
        run(threads, lambda: names.append(threading.current_thread().name))
        time.sleep(0.02)  # back to idle before the next job
    assert len(set(names)) == 1  # a queue shared by idle threads hands jobs round the pool instead


def test_jobs_submitted_while_every_thread_is_busy_all_run_in_order():
    threads = AppThreads(2)
    release, ran = threading.Event(), []
    for _ in range(2):
        threads.submit(release.wait, 5)
    for n in range(5):
        threads.submit(ran.append, n)
    time.sleep(0.1)
    assert ran == []  # both threads are busy: the jobs wait
    release.set()
    deadline = time.monotonic() + 5
    while len(ran) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == [0, 1, 2, 3, 4] and ran[:2] in ([0, 1], [1, 0])


def test_a_failing_job_leaves_its_thread_serving():
    threads = AppThreads(1)
    threads.submit(lambda: 1 / 0)
    names = []
    run(threads, lambda: names.append(threading.current_thread().name))
    assert names == ["app-1"]
