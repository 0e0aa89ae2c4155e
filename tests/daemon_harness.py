"""Start the real ``quartier run`` daemon against a simulated meter on a pty, for fault tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from demo.pty_meter import PtyMeter
from demo.meter import MeterSimulator


@dataclass
class Rig:
    """A simulated meter that keeps running while daemons come and go."""

    tmp: Path
    meter: PtyMeter
    sent: list[tuple[datetime, int, int]] = field(default_factory=list)  # (time, import Wh, export Wh)
    config: Path | None = None
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    runs: int = 0
    glitches: list[str] = field(default_factory=list)  # tests.p1_glitches kinds, one per next telegram
    glitch_all: str | None = None  # every telegram, until set back to None
    glitched: list[tuple[datetime, str]] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "store.sqlite"

    @property
    def runtime(self) -> Path:
        return self.tmp / "run"

    def write_config(self, *, influx: dict | None = None, extra_daemon: str = "") -> Path:
        lines = [
            "[[sources]]",
            'type = "p1"',
            f'port = "{self.meter.path}"',
            "baudrate = 115200",
            # the simulated meter runs faster than real time: its clock is judged against its own
            # telegrams, not against the Pi's
            'clock_check = "neighbours"',
            "[store]",
            f'path = "{self.db}"',
            "[daemon]",
            f'runtime_dir = "{self.runtime}"',
            "health_interval_s = 0.5",
            "max_interpolation_gap_s = 120",
            extra_daemon,
        ]
        if influx:
            lines += ["[influx]", "enabled = true"] + [f"{k} = {json.dumps(v)}" for k, v in influx.items()]
        self.config = self.tmp / "quartier.toml"
        self.config.write_text("\n".join(lines) + "\n")
        return self.config

    def start_daemon(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        assert self.config is not None
        self.runs += 1
        self.log_path = self.tmp / f"daemon-{self.runs}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"), env=full_env,
        )
        return self.proc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and the exit status; the daemon ran at the CLI's default INFO level, as in production,
        and a record it could not log (``--- Logging error ---`` on stderr) fails the test (issue 13)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=timeout)
        assert "--- Logging error ---" not in self.log(), f"the daemon could not log a record:\n{self.log()[-3000:]}"
        return status

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def rss_kb(self) -> int:
        """The daemon's resident memory (VmRSS), kB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def health(self) -> dict | None:
        try:
            return json.loads((self.runtime / "health.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) while waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-3000:]}")


def make_rig(tmp: Path, *, start: datetime, speed: float, seed: int = 1, **sim_kwargs) -> Rig:
    sim = MeterSimulator(start=start, seed=seed, **sim_kwargs)
    rig = Rig(tmp=tmp, meter=None)  # type: ignore[arg-type]
    inner = sim.telegram_at

    def recording(t: datetime) -> bytes:
        frame = inner(t)
        rig.sent.append((t, sum(sim.import_wh), sum(sim.export_wh)))  # the meter's truth, glitch or not
        kind = rig.glitch_all or (rig.glitches.pop(0) if rig.glitches else None)
        if kind is not None:
            from tests.p1_glitches import glitch

            rig.glitched.append((t, kind))
            frame = glitch(frame, kind)
        return frame

    sim.telegram_at = recording  # type: ignore[method-assign]
    rig.meter = PtyMeter(sim, speed=speed, link=tmp / "p1")
    rig.meter.start()
    return rig
