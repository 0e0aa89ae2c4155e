"""``quartier run``: the long-running gateway process.

Threads, each unable to stop the others:
- one reader per source (P1 on pyserial, a Fluksometer, the demo meter: gateway/sources.py),
  reconnecting forever;
- one per sink (InfluxDB), reading the outbox;
- the main thread: health file, systemd watchdog, retention, disk alarm.

Metering never waits on the network: sinks only ever read the local outbox.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from gateway import systemd
from gateway.clock import clock_synchronised
from gateway.config import Config
from gateway.health import HEALTH_FILE
from gateway.logs import get_logger
from gateway.model import utc_iso
from gateway.pipeline import Pipeline
from gateway.sources import Source

log = get_logger("quartier.gateway.daemon")


@dataclass
class _SourceRunner:
    name: str
    pipeline: Pipeline
    reader: Source
    thread: threading.Thread | None = None


@dataclass
class Daemon:
    config: Config
    runners: list[_SourceRunner] = field(default_factory=list)
    sinks: list[object] = field(default_factory=list)
    sink_threads: list[threading.Thread] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    store: object | None = None
    started_at: float = field(default_factory=time.monotonic)
    live: object | None = None  # gateway.live.LivePublisher: snapshots for the web service
    influx_live: object | None = None  # gateway.sinks.influx_live.LiveInfluxWriter, when configured
    _clock_synced: bool | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        from gateway.store import Store

        cfg = self.config
        sink_names = ["influx"] if cfg.influx.enabled else []
        if cfg.uplink.enabled:
            sink_names.append("uplink")
        cfg.store.path.parent.mkdir(parents=True, exist_ok=True)
        self.store = Store(
            cfg.store.path,
            sinks=sink_names,
            timezone=cfg.daemon.timezone,
            retention_days=cfg.store.retention_days,
            max_bytes=cfg.store.max_mb * 1024 * 1024,
        )
        self._clock_synced = clock_synchronised()
        from gateway.live import SOCKET_NAME, LivePublisher

        self.live = LivePublisher(cfg.daemon.runtime_dir / SOCKET_NAME)
        if cfg.influx.enabled:
            from gateway.sinks.influx import InfluxSink

            self.sinks.append(
                InfluxSink(
                    self.store,
                    url=cfg.influx.url,
                    token=cfg.influx.token.get_secret_value(),
                    org=cfg.influx.org,
                    bucket=cfg.influx.bucket,
                    measurement=cfg.influx.measurement,
                    timeout_s=cfg.influx.timeout_s,
                    backoff_max_s=cfg.influx.backoff_max_s,
                )
            )
            if cfg.influx.live_interval_s:
                from gateway.sinks.influx_live import LiveInfluxWriter

                self.influx_live = LiveInfluxWriter(
                    url=cfg.influx.url, token=cfg.influx.token.get_secret_value(), org=cfg.influx.org,
                    bucket=cfg.influx.bucket, measurement=cfg.influx.live_measurement,
                    interval_s=cfg.influx.live_interval_s, max_points=cfg.influx.live_max_points,
                    timeout_s=cfg.influx.timeout_s, backoff_max_s=min(cfg.influx.backoff_max_s, 60),
                    role_of=self._role_of,
                )
                self.sinks.append(self.influx_live)
        if cfg.uplink.enabled:  # the community uplink: its outbox is "uplink" (gateway/uplink.py)
            from gateway.uplink import (
                UplinkConfigError,
                live_source_for,
                node_uplink,
                settings_from_config,
            )

            try:
                up = settings_from_config(cfg.uplink)
            except UplinkConfigError as exc:  # metering goes on; the outbox keeps the rows until it is fixed
                log.error("uplink.misconfigured", extra={"error": str(exc)})
            else:
                # one connection per gateway: the operation's totals and this member's allocations come
                # back on it and reach the web service over the live socket (gateway/live.py)
                self.sinks.append(node_uplink(self.store, up, live=self.live, live_source=live_source_for(
                    lambda: [r.pipeline for r in self.runners], up)))
        for i, src in enumerate(cfg.sources):
            self.runners.append(self._make_runner(i, src))

    def _on_reading(self, reading) -> None:
        """Each accepted reading (reader threads): handed to the live measurement, never waited on."""
        if self.influx_live is not None:
            self.influx_live.offer(reading)

    def _role_of(self, meter_id: str) -> str:
        for src, runner in zip(self.config.sources, self.runners):
            if meter_id in runner.pipeline.health:
                return src.role_of(meter_id)
        return "grid"

    def _notify_sinks(self, _batch) -> None:
        for sink in self.sinks:
            sink.notify()

    def _make_runner(self, index: int, src) -> _SourceRunner:
        from gateway.live_pipeline import LivePipeline
        from gateway.plausibility import Limits
        from gateway.submeter_plausibility import DEFAULT_MAX_FLOW, FlowLimits
        from gateway.sources import SourceContext, source_kind

        d = self.config.daemon
        # the wall-clock check needs a meter clock that runs in real time: not a simulated one, and
        # not a Fluksometer's own clock taken as it is (an emulator faster than real time)
        wall = src.runs_on_real_time
        limits = Limits(max_power_w=src.max_power_w or d.max_power_w,
                        clock_tolerance_s=d.clock_tolerance_s if wall else None,
                        confirm=d.confirm_readings, max_jump_s=d.max_interpolation_gap_s)
        flow_limits = FlowLimits(max_flow={**DEFAULT_MAX_FLOW, **getattr(src, "max_flow", {})},
                                 clock_tolerance_s=limits.clock_tolerance_s, confirm=limits.confirm)
        pipeline = LivePipeline(
            self.store,
            publisher=self.live,
            max_gap=timedelta(seconds=d.max_interpolation_gap_s),
            meter_id=src.meter_id,
            on_commit=self._notify_sinks,
            clock_synced=lambda: self._clock_synced is not False,
            limits=limits,
            flow_limits=flow_limits,
            describe_meter=lambda mid: (src.role_of(mid), src.serial_of(mid)),
            on_reading=self._on_reading,
        )
        ctx = SourceContext(sink=pipeline, baseline=self.store.last_boundary,
                            clock_synced=lambda: self._clock_synced, timezone=d.timezone)
        reader = source_kind(src.type).open(src, ctx)
        return _SourceRunner(name=f"{src.type}{index}", pipeline=pipeline, reader=reader)

    def start(self) -> None:
        try:  # the live feed is a convenience: metering goes on without it
            if self.live is not None:
                self.live.start()
        except OSError as exc:
            log.error("live.unavailable", extra={"error": str(exc)})
        for runner in self.runners:
            runner.thread = threading.Thread(target=self._read_loop, args=(runner,), name=f"reader-{runner.name}", daemon=True)
            runner.thread.start()
        for sink in self.sinks:
            t = threading.Thread(target=sink.run, args=(self.stop_event,), name=f"sink-{sink.name}", daemon=True)
            t.start()
            self.sink_threads.append(t)

    def _read_loop(self, runner: _SourceRunner) -> None:
        """Reader thread: never dies on a bad telegram; a source that returns (its link dropped) is
        run again after a pause, and reconnects with its own backoff."""
        while not self.stop_event.is_set():
            try:
                runner.reader.run(self.stop_event)
            except Exception:
                log.exception("reader.crashed", extra={"source": runner.name})
                self.stop_event.wait(2.0)
            else:
                self.stop_event.wait(1.0)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT. Returns the exit status."""
        self.open()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        from p1.crc import compiled as crc_compiled

        if not crc_compiled():  # metering still works, but a Pi may fall behind a meter sending every second
            log.warning("crc.pure_python", extra={"fix": "reinstall with the pinned wheels (deploy/install.sh --force); see quartier doctor"})
        systemd.notify("READY=1\nSTATUS=reading meters")
        log.info(
            "daemon.started",
            extra={"sources": len(self.runners), "store": str(self.config.store.path),
                   "influx": self.config.influx.enabled, "pid": os.getpid()},
        )
        try:
            self._housekeeping()
        finally:
            self.shutdown()
        return 0

    def _housekeeping(self) -> None:
        cfg = self.config.daemon
        wd = systemd.watchdog_interval_s()
        period = min(cfg.health_interval_s, wd) if wd else cfg.health_interval_s
        last_retention = 0.0
        while not self.stop_event.wait(period):
            now = time.monotonic()
            self._clock_synced = clock_synchronised()
            for runner in self.runners:
                if runner.pipeline.pending:  # a failed commit: retry without waiting for a reading
                    runner.pipeline.flush()
            health = self.health()
            self._write_health(health)
            # fed only while readings are accepted: telegrams that are all refused are no metering
            age = health["last_accepted_age_s"]
            if age is not None and age <= cfg.watchdog_max_telegram_age_s:
                systemd.notify("WATCHDOG=1\nSTATUS=" + _status_line(health))
            else:
                systemd.notify("STATUS=no accepted reading for " + (f"{age:.0f} s" if age is not None else "ever"))
            if now - last_retention > 3600:
                last_retention = now
                try:
                    removed = self.store.enforce_retention(datetime.now(timezone.utc))
                    if removed:
                        log.info("store.retention", extra={"removed": removed})
                    disk = self.store.disk_status()
                    if getattr(disk, "alarm", False):
                        log.error("store.disk_alarm", extra={"reason": getattr(disk, "message", "")})
                except Exception as exc:
                    log.error("store.housekeeping_failed", extra={"error": str(exc)})

    def shutdown(self) -> None:
        systemd.notify("STOPPING=1")
        self.stop_event.set()
        for runner in self.runners:
            runner.reader.close()
        for runner in self.runners:
            if runner.thread is not None:
                runner.thread.join(timeout=5)
            runner.pipeline.flush()
        for t in self.sink_threads:
            t.join(timeout=5)
        if self.live is not None:
            self.live.stop()
        try:  # the last word: `quartier status` and the doctor tell a stopped daemon from a live one
            self._write_health({**self.health(), "state": "stopped"})
        except Exception:
            pass
        if self.store is not None:
            self.store.close()
        log.info("daemon.stopped")

    # -- health ----------------------------------------------------------------------------------

    def health(self) -> dict:
        now = time.monotonic()
        meters: dict[str, dict] = {}
        readers: dict[str, dict] = {}
        ages = []
        accepted_ages = []
        for runner in self.runners:
            p = runner.pipeline
            for mid, h in p.health.items():
                age = now - h.last_telegram_monotonic if h.last_telegram_monotonic else None
                if age is not None:
                    ages.append(age)
                acc_age = now - h.last_accepted_monotonic if h.last_accepted_monotonic else None
                if acc_age is not None:
                    accepted_ages.append(acc_age)
                live = p.aggregators.get(mid).live() if mid in p.aggregators else None
                meters[mid] = {
                    "source": runner.name,
                    "telegrams": h.telegrams,
                    "accepted": h.accepted,
                    "crc_errors": h.crc_errors,
                    "crc_error_rate": h.crc_error_rate,
                    "rejected": h.rejected,
                    # every refused reading by reason: crc, no_crc, unknown_register, implausible_step,
                    # register_drop, time_jump, future; MBus channel readings as <kind>_<reason>
                    # (gas_register_drop, water_implausible_step, gas_unit_change ...)
                    "refused": dict(sorted(h.refused.items())),
                    "last_telegram_age_s": round(age, 1) if age is not None else None,
                    "last_accepted_age_s": round(acc_age, 1) if acc_age is not None else None,
                    "meter_time": utc_iso(h.last_reading.time) if h.last_reading else None,
                    "import_w": h.last_reading.import_w if h.last_reading else None,
                    "export_w": h.last_reading.export_w if h.last_reading else None,
                    "quarter_hour": {
                        "start": utc_iso(live.start),
                        "import_wh": live.import_wh,
                        "export_wh": live.export_wh,
                        **_capacity(live, h.last_reading),
                    } if live else None,
                }
            readers[runner.name] = {
                "port": getattr(runner.reader, "port", None),
                "reconnects": getattr(runner.reader, "reconnects", None),
                "unattributed_crc_errors": p.unattributed_crc_errors,  # until the port's meter is known
                "unattributed": dict(p.unattributed),
                "pending_commits": p.pending,
            }
        sinks = {}
        for sink in self.sinks:
            st = getattr(sink, "stats", None)
            sinks[sink.name] = {
                "last_success": utc_iso(getattr(st, "last_success", None)),
                "last_error": getattr(st, "last_error", None),
                "consecutive_failures": getattr(st, "consecutive_failures", 0),
            }
            extra = getattr(sink, "health_fields", None)  # the uplink: allocations stored, malformed ones
            if extra is not None:
                sinks[sink.name].update(extra())
        return {
            "time": utc_iso(datetime.now(timezone.utc)),
            "state": "running",
            "pid": os.getpid(),
            "uptime_s": round(now - self.started_at, 1),
            "last_telegram_age_s": round(min(ages), 1) if ages else None,
            "last_accepted_age_s": round(min(accepted_ages), 1) if accepted_ages else None,
            "meters": meters,
            "readers": readers,
            "outbox_depth": self.store.outbox_depth() if self.store else None,
            "sinks": sinks,
            "clock_synchronised": self._clock_synced,
            "live": vars(self.live.stats).copy() if self.live is not None else None,
        }

    def _write_health(self, health: dict) -> None:
        """Atomic write to the runtime dir (a tmpfs on the Pi): readers never see half a file."""
        d = self.config.daemon.runtime_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / (HEALTH_FILE + ".tmp")
            tmp.write_text(json.dumps(health, indent=1))
            os.replace(tmp, d / HEALTH_FILE)
        except OSError as exc:
            log.warning("health.write_failed", extra={"path": str(d), "error": str(exc)})


# the Fluksometer client's refusal kinds, in the gate's reasons where they mean the same
def _capacity(live, reading) -> dict:
    """Flemish capacity tariff: will this quarter-hour set a new monthly peak (1-0:1.6.0)?"""
    projected = live.projected_demand_w()
    peak = reading.month_peak_w if reading is not None else None
    return {
        "projected_demand_w": round(projected, 1) if projected is not None else None,
        "meter_demand_w": reading.demand_w if reading is not None else None,  # 1-0:1.4.0 as the meter says
        "month_peak_w": peak,
        "above_month_peak": (projected > peak) if projected is not None and peak is not None else None,
    }


def _status_line(health: dict) -> str:
    parts = [f"{mid}: {m['telegrams']} telegrams" for mid, m in health["meters"].items()]
    parts.append(f"outbox {health['outbox_depth']}")
    return "; ".join(parts)
