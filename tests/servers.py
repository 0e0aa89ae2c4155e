"""Real servers for the tests, each on a free loopback port with its data in a temporary directory.

``VictoriaMetrics`` speaks the InfluxDB v2 write API (``/api/v2/write``); ``Mosquitto`` is the MQTT
broker. Both can be stopped and started again on the same port with the same data, which is how the
tests simulate a database or broker outage. The binaries come from Debian packages (``.ci/run``
installs them); a missing binary is a :class:`ServerUnavailable`, which the fixtures turn into a
failure, never a skip: CI must not pass by testing nothing.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VICTORIA_METRICS_BIN = "/usr/bin/victoria-metrics"
MOSQUITTO_BIN = "/usr/sbin/mosquitto"
LOOPBACK = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """A server binary is missing or the server did not come up."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerProcess:
    """A child process with a log file, a fixed port and a data directory kept across restarts."""

    binary: str = ""
    package: str = ""
    start_timeout_s: float = 15.0

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if not os.access(self.binary, os.X_OK):
            raise ServerUnavailable(
                f"{self.binary} not found: install it with `apt-get install {self.package}` (the tests start a real server)"
            )
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (again) on the same port and data directory; return once it answers."""
        if self.running:
            return
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.starts += 1
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ready():
                    return
                time.sleep(0.05)
            # exited early (e.g. the port of the previous run is still held) or never answered
            self._terminate(kill=True)
            if time.monotonic() >= deadline:
                raise ServerUnavailable(f"{self.binary} did not start on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        """SIGTERM (a clean shutdown that flushes the data) or SIGKILL (``kill=True``, a crash)."""
        self._terminate(kill=kill, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _terminate(self, *, kill: bool, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    def close(self) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored sample as VictoriaMetrics exports it."""

    metric: str
    labels: dict[str, str]
    timestamp_s: int
    value: float


class VictoriaMetrics(ServerProcess):
    """VictoriaMetrics single-node, the InfluxDB v2 write API of the tests.

    ``-dedup.minScrapeInterval=1ms`` keeps one sample per series and timestamp, as InfluxDB keeps one
    point per series and timestamp; ``-search.latencyOffset=0s`` and ``-search.disableCache`` make a
    sample readable as soon as :meth:`flush` has run. The Influx measurement and field become the
    metric name ``<measurement>_<field>``; tags become labels.
    """

    binary = VICTORIA_METRICS_BIN
    package = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def flush(self) -> None:
        """Make everything written so far visible to queries."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10) as resp:
            resp.read()

    def export(self, match: str) -> list[dict]:
        """Raw series from ``/api/v1/export`` (deduplicated, every timestamp since 1970)."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as resp:
            body = resp.read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def query_points(self, metric: str, **labels: str) -> list[Sample]:
        """Every stored sample of a metric (optionally matching labels), ordered by time then labels."""
        selector = ",".join([f'__name__="{metric}"'] + [f'{k}="{v}"' for k, v in labels.items()])
        out = []
        for series in self.export("{" + selector + "}"):
            lab = {k: v for k, v in series["metric"].items() if k != "__name__"}
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                out.append(Sample(series["metric"]["__name__"], lab, ts // 1000, value))
        out.sort(key=lambda s: (s.timestamp_s, sorted(s.labels.items())))
        return out

    def write_lines(self, lines: str, precision: str = "s") -> int:
        """Write line protocol directly (for checks that do not go through the sink)."""
        req = urllib.request.Request(
            f"{self.url}/api/v2/write?org=test&bucket=test&precision={precision}", data=lines.encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status


class Mosquitto(ServerProcess):
    """Mosquitto with persistence in the work directory (retained messages and sessions survive a
    clean restart), anonymous access, listening on loopback only."""

    binary = MOSQUITTO_BIN
    package = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        super().__init__(workdir, port)
        self.extra_conf = extra_conf
        self.conf_path = self.workdir / "mosquitto.conf"

    def command(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        conf = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # started as root, mosquitto would drop to user "mosquitto", who cannot write our temp dir
            f"user {getpass.getuser()}",
            self.extra_conf,
        ]
        self.conf_path.write_text("\n".join(conf) + "\n")
        return [self.binary, "-c", str(self.conf_path)]

    def ready(self) -> bool:
        return port_open(self.host, self.port)


def write_web_config(tmp: Path, token: str = "t0ken-t0ken") -> tuple[Path, int]:
    """A node configuration for a real ``quartier web`` on a free loopback port (no daemon behind it),
    with a bearer token in a secrets file of mode 0600. Returns the file and the port."""
    secrets = tmp / "secrets.toml"
    secrets.write_text(f'[web]\ntoken = "{token}"\n')
    secrets.chmod(0o600)
    port = free_port()
    cfg = tmp / "q.toml"
    cfg.write_text("\n".join([
        "[store]", f'path = "{tmp / "q.sqlite"}"',
        "[daemon]", f'runtime_dir = "{tmp / "run"}"', f'secrets_file = "{secrets}"',
        "[web]", 'host = "127.0.0.1"', f"port = {port}",
    ]) + "\n")
    return cfg, port
