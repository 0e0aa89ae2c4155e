"""Operations (issue 17): the long-running commands stop cleanly on SIGTERM (status 0, as systemd
expects from ``systemctl stop``), and their log lines under journald carry a syslog priority, one
timestamp (journald's) and no terminal colour codes — checked on the real processes, uvicorn included."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import port_open, write_web_config


def _start(args: list[str], stderr_path: Path, *, journal: bool = False, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """``quartier ARGS`` with stderr to a file; with ``journal``, JOURNAL_STREAM names that file, as
    systemd does for a unit's stderr connected to journald."""
    err = open(stderr_path, "wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    if journal:
        st = os.fstat(err.fileno())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=err, env=env)


def _sigterm(proc: subprocess.Popen, within_s: float = 10.0) -> int:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {within_s} s after SIGTERM") from None
    assert time.monotonic() - t0 < within_s
    return code


def _until(predicate, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


def test_web_under_journald_logs_priorities_without_colours_and_stops_on_sigterm() -> None:
    with tempfile.TemporaryDirectory(prefix="qop") as d:  # short: the live socket path is limited
        tmp = Path(d)
        cfg, port = write_web_config(tmp)
        log = tmp / "journal"
        proc = _start(["web", "--config", str(cfg)], log, journal=True)
        try:
            _until(lambda: port_open("127.0.0.1", port), 30, proc, log)
            time.sleep(0.3)
            assert _sigterm(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text(errors="replace")
    lines = text.splitlines()
    assert lines, "no log line"
    assert all(re.match(r"<[0-7]>[A-Z]+ ", line) for line in lines), text
    assert "\x1b" not in text and "color_message" not in text, text  # uvicorn's coloured duplicates
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", text), text  # journald's timestamp only
    assert any(line.startswith("<6>INFO uvicorn.error Uvicorn running on http://127.0.0.1:") for line in lines), text
    assert any(line.startswith("<6>INFO quartier.") for line in lines), text


def test_light_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "light.log"
    proc = _start(["light", "--mock", "--url", "http://127.0.0.1:9/", "--runtime-dir", str(tmp_path)], log)
    try:
        _until(lambda: "light.started" in log.read_text(), 30, proc, log)
        assert _sigterm(proc) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_flukso_emulate_stops_on_sigterm(tmp_path: Path, mosquitto) -> None:
    """It had no handler: SIGTERM killed it (status 143) before it closed its MQTT session."""
    log = tmp_path / "emulate.log"
    proc = _start(["flukso", "emulate", "--broker", f"{mosquitto.host}:{mosquitto.port}"], log)
    try:
        _until(lambda: proc.stdout is not None and b"[[sources]]" in proc.stdout.read1(65536), 30, proc, log)
        time.sleep(0.5)
        assert _sigterm(proc) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "# emulator stopped at" in log.read_text()


def test_a_one_shot_command_cut_by_sigterm_unwinds_and_exits_143(tmp_path: Path) -> None:
    """Commands without a handler of their own: SIGTERM runs their ``finally`` blocks, status 128+15."""
    log = tmp_path / "decode.log"
    proc = _start(["p1", "decode", "-"], log, stdin=subprocess.PIPE)  # waits on stdin for ever
    try:
        time.sleep(1.5)
        assert _sigterm(proc) == 143, log.read_text()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
    assert "Traceback" not in log.read_text()
