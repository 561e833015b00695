"""The on-disk reference cache: computed once however many cells ask at once, and no ``.lock``
file left behind once the lock is released."""

from __future__ import annotations

import threading
import time

from PIL import Image

from dit_engine.reference import _locked, get_or_create


def test_concurrent_cells_compute_the_reference_once_and_leave_no_lock(tmp_path):
    runs = []

    def run():
        runs.append(threading.get_ident())
        time.sleep(0.2)  # long enough for every other thread to be waiting on the lock
        return [Image.new("RGB", (4, 4), "white")], {"latency_s": 0.5, "clock": "wall", "clock_s": 0.5}

    results = []
    threads = [threading.Thread(target=lambda: results.append(get_or_create(tmp_path / "refs", {"model": "x"}, run)))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1 and len(results) == 6
    assert sum(not r.reused for r in results) == 1 and len({r.key for r in results}) == 1
    assert [p.name for p in (tmp_path / "refs").iterdir()] == [results[0].key]  # no .<key>.lock


def test_the_lock_is_exclusive_while_its_file_is_removed_and_recreated(tmp_path):
    # Many short holders: each removes the lock file on release while others wait on it; a
    # waiter that got the removed file's lock must not hold the lock next to a newcomer.
    path = tmp_path / ".key.lock"
    inside, overlaps = [0], []
    guard = threading.Lock()

    def hold(times: int) -> None:
        for _ in range(times):
            with _locked(path):
                with guard:
                    inside[0] += 1
                    overlaps.append(inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=hold, args=(30,)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 150 and max(overlaps) == 1
    assert not path.exists()
