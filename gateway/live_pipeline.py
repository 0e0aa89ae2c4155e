"""The daemon's metering pipeline that also tells the live feed (gateway/live.py) about each accepted
reading and each committed quarter-hour.

Apart from ``gateway.live`` so that the web service, which only reads the feed, does not load the
pipeline, the plausibility gate and the P1 parser.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.live import LivePublisher, quarter_hour_message, reading_message
from gateway.logs import get_logger
from gateway.model import QuarterHour, Reading
from gateway.pipeline import Pipeline

log = get_logger("quartier.gateway.live")


@dataclass
class LivePipeline(Pipeline):
    """The metering pipeline, also telling the live feed about each reading and each committed
    quarter-hour. A failure to publish is logged once and never reaches metering."""

    publisher: LivePublisher | None = None
    # a meter's (role, serial) from its source's configuration (gateway.sources.SourceSettings)
    describe_meter: Callable[[str], tuple[str, str | None]] = lambda _mid: ("grid", None)
    # also told of each accepted reading (the InfluxDB live measurement); must not block
    on_reading: Callable[[Reading], None] | None = None
    _publish_failing: bool = field(default=False, repr=False)

    def feed_reading(self, reading: Reading, *, telegram: bool = False) -> list[QuarterHour]:
        # only what the plausibility gate accepted is news (a held or refused reading is not), and
        # with its MBus channels as their gate accepted them (a glitched gas value never goes out)
        committed, accepted = self._feed(reading, telegram=telegram)
        if self.publisher is not None or self.on_reading is not None:
            if self.publisher is not None:
                self._publish(accepted, committed)
            if accepted is not None and self.on_reading is not None:
                try:
                    self.on_reading(accepted)
                except Exception as exc:  # never reaches metering
                    log.error("live.on_reading_failed", extra={"error": repr(exc)})
        return committed

    def flush(self) -> list[QuarterHour]:
        committed = super().flush()
        if committed and self.publisher is not None:
            self._publish(None, committed)
        return committed

    def publish_power(self, meter_id: str, import_w: float | None, export_w: float | None) -> None:
        """Live power between readings (a Flukso gauge every second while its counters report once a
        minute): the meter's last snapshot with the current power, so the signal follows the sun."""
        if self.publisher is None and self.on_reading is None:
            return
        with self._lock:
            h = self.health.get(meter_id)
            last = h.last_reading if h is not None else None
            agg = self.aggregators.get(meter_id)
            live = agg.live() if agg is not None else None
        if last is None:
            return  # nothing to anchor the registers on yet
        snapshot = dataclasses.replace(last, import_w=import_w, export_w=export_w)
        if self.on_reading is not None:
            try:
                self.on_reading(snapshot)
            except Exception as exc:
                log.error("live.on_reading_failed", extra={"error": repr(exc)})
        if self.publisher is None:
            return
        try:
            self.publisher.publish(reading_message(snapshot, live, time.time(), *self.describe_meter(meter_id)),
                                   latest_for=meter_id)
        except Exception as exc:
            if not self._publish_failing:
                log.error("live.publish_failed", extra={"error": repr(exc)})
            self._publish_failing = True

    def _publish(self, reading: Reading | None, committed: list[QuarterHour]) -> None:
        assert self.publisher is not None
        try:
            for qh in committed:
                self.publisher.publish(quarter_hour_message(qh))
            if reading is not None:
                with self._lock:
                    agg = self.aggregators.get(reading.meter_id)
                    live = agg.live() if agg is not None else None
                self.publisher.publish(reading_message(reading, live, time.time(), *self.describe_meter(reading.meter_id)),
                                       latest_for=reading.meter_id)
            self._publish_failing = False
        except Exception as exc:
            if not self._publish_failing:
                log.error("live.publish_failed", extra={"error": repr(exc)})
            self._publish_failing = True
