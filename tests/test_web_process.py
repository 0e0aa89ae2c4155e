"""The real ``quartier web`` process at its production log level (the CLI's default ``--log-level
INFO``): state changes work there and log cleanly (issue 13: the alert answered 500 at INFO only)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import write_web_config

TOKEN = "s3cret-web-token"


@pytest.fixture
def web() -> Iterator[tuple[httpx.Client, Path]]:
    with tempfile.TemporaryDirectory(prefix="qwp") as d:  # short: the live socket path is limited
        tmp = Path(d)
        cfg, port = write_web_config(tmp, TOKEN)
        log = tmp / "web.log"
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "web", "--config", str(cfg)],  # default INFO
                                stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if http.get("/api/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "quartier web did not start:\n" + log.read_text()
                time.sleep(0.1)
            yield http, log
        finally:
            http.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_alert_answers_200_turns_the_signal_red_and_logs_the_message(web):
    http, log = web
    ok = {"Authorization": f"Bearer {TOKEN}"}
    r = http.put("/api/v1/alert", json={"message": "Peak on the feeder", "minutes": 30}, headers=ok)
    assert r.status_code == 200, r.text  # was 500: extra={"message": ...} collides with LogRecord
    deadline = time.monotonic() + 1.0
    while (sig := http.get("/api/v1/signal").json())["state"] != "red" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sig["state"] == "red" and sig["reason"] == "reduce_now" and sig["alert"]["message"] == "Peak on the feeder"
    assert http.delete("/api/v1/alert", headers=ok).status_code == 200
    time.sleep(0.2)  # let the log line reach the file
    text = log.read_text()
    assert "signal.alert_raised" in text and "Peak on the feeder" in text and "signal.alert_cleared" in text
    assert "Logging error" not in text and "Traceback" not in text, text


def test_bad_dates_are_a_4xx_naming_the_field_in_the_real_process(web):
    http, log = web
    for path, field in [("/api/v1/quarter-hours?from=9999-12-31", "from"), ("/api/v1/quarter-hours?from=0001-01-01", "from"),
                        ("/api/v1/allocation?at=9999-12-31", "at")]:
        r = http.get(path)
        assert 400 <= r.status_code < 500 and r.json()["detail"].startswith(field), (path, r.status_code, r.text)
    assert "Traceback" not in log.read_text()
