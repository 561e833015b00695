"""Threads that fit the machine: cores / ranks each, the user's setting kept (and said when it
oversubscribes), and a machine with more busy threads than cores said once in the log."""

from __future__ import annotations

import logging

import pytest

from dit_engine import threads


@pytest.mark.parametrize(("cores", "ranks", "each"), [(2, 2, 1), (2, 1, 2), (8, 2, 4), (16, 3, 5), (2, 4, 1)])
def test_ranks_share_the_cores(monkeypatch, cores, ranks, each):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    env = threads.rank_environment({}, ranks)
    assert env["OMP_NUM_THREADS"] == str(each) == str(threads.threads_per_rank(ranks))
    assert each * ranks <= cores or each == 1  # more ranks than cores: one thread each, no fewer


def test_the_users_thread_setting_is_kept_and_an_oversubscription_said(monkeypatch, caplog):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="dit_engine.threads"):
        assert threads.rank_environment({"OMP_NUM_THREADS": "1"}, 2)["OMP_NUM_THREADS"] == "1"
        assert not caplog.records
        assert threads.rank_environment({"OMP_NUM_THREADS": "2"}, 2)["OMP_NUM_THREADS"] == "2"
    assert "4 threads on 2 cores" in caplog.text and "unset it to give each rank 1" in caplog.text


def test_a_busy_machine_is_said_once(monkeypatch, caplog):
    monkeypatch.setattr(threads, "_warned", False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "running_threads", lambda: 3)  # this thread and two others
    with caplog.at_level(logging.WARNING, logger="dit_engine.threads"):
        assert threads.warn_if_oversubscribed(1) is not None
        assert threads.warn_if_oversubscribed(1) is None  # once per process
    assert caplog.text.count("busier than its cores") == 1
    assert "threads=1" in caplog.text  # the setting that helps, named


def test_a_machine_loaded_over_its_cores_is_said(monkeypatch, caplog):
    monkeypatch.setattr(threads, "_warned", False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "running_threads", lambda: 1)  # nothing else runnable this instant
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.5, 1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="dit_engine.threads"):
        assert "threads=1" in threads.warn_if_oversubscribed(1)


def test_a_quiet_machine_says_nothing(monkeypatch, caplog):
    monkeypatch.setattr(threads, "_warned", False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "running_threads", lambda: 1)
    with caplog.at_level(logging.WARNING, logger="dit_engine.threads"):
        assert threads.warn_if_oversubscribed(2) is None
    assert not caplog.records


def test_running_threads_reads_the_kernels_count():
    count = threads.running_threads()
    assert count is None or count >= 1  # the thread asking is running


def test_the_threads_setting_is_checked_and_used(tmp_path, monkeypatch):
    import json

    import torch

    from dit_engine.testing.cli import refusal, run_cli

    assert "threads=0: use 1 or more" in refusal("threads=0", "dry_run=true")
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    try:
        code, stderr = run_cli("threads=1", "workload=smoke", "quiet=true", "hydra.run.dir=run")
        assert code == 0, stderr[-2000:]
        assert json.loads((tmp_path / "run" / "metrics.json").read_text())["run"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
