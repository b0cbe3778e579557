"""Several daphne processes behind one port (agentvine/web_processes.py), as
scripts/up (WEB_PROCESSES), docker-compose.yml and bench/fleet.py run them."""

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _two_daphnes(log):
    """``python -m agentvine.web_processes --processes 2`` on a free port."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentvine.web_processes", "--processes", "2", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def test_two_daphnes_share_one_port_and_stop_together(tmp_path):
    log = open(tmp_path / "web.log", "w")
    parent = _two_daphnes(log)
    try:
        line = parent.stdout.readline()
        assert line.startswith("2 daphne processes on 127.0.0.1:"), line
        base = f"http://127.0.0.1:{line.rsplit(':', 1)[1].strip()}"
        daphnes = _children(parent.pid)
        assert len(daphnes) == 2
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "web.log").read_text()
            time.sleep(0.2)
        before = {pid: _cpu_ticks(pid) for pid in daphnes}
        # New connections each time: the kernel hands them to either process.
        for _ in range(200):
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        assert all(_cpu_ticks(pid) > before[pid] for pid in daphnes), "one daphne answered nothing"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        assert not any(os.path.exists(f"/proc/{pid}") for pid in daphnes)
    finally:
        if parent.poll() is None:
            parent.kill()
        log.close()


def test_a_stop_while_the_daphnes_still_start_is_a_clean_stop(tmp_path):
    """A supervisor may stop the set at once: daphnes still importing Django
    have no stop handler yet and end at the signal passed on; that is the
    stop asked for, so the set exits 0 (not 128 + SIGTERM)."""
    log = open(tmp_path / "web.log", "w")
    parent = _two_daphnes(log)
    try:
        assert parent.stdout.readline().startswith("2 daphne processes on 127.0.0.1:")
        daphnes = _children(parent.pid)
        assert len(daphnes) == 2
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        assert not any(os.path.exists(f"/proc/{pid}") for pid in daphnes)
    finally:
        if parent.poll() is None:
            parent.kill()
        log.close()
