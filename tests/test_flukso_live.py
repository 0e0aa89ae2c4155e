"""Flukso gauges refresh the live feed every second, between the counters' readings."""

from __future__ import annotations

import json
import socket
import time

from flukso.client import FluksoClient
from flukso.readings import TimePolicy
from flukso.sensors import Assignment, Role
from gateway.live import LivePublisher
from gateway.live_pipeline import LivePipeline

NET = "ab" * 16
TS = 1782032400  # 2026-06-21 09:00:00 UTC


class _Store:
    def last_boundary(self, meter_id):
        return None

    def commit_quarter_hours(self, qhs):
        return len(qhs)


def test_gauges_reach_the_live_feed_between_counter_readings(tmp_path):
    publisher = LivePublisher(tmp_path / "live.sock")
    publisher.start()
    pipeline = LivePipeline(_Store(), publisher=publisher)
    client = FluksoClient(host="127.0.0.1", client_id="live", assignments=[Assignment(NET, Role.GRID_NET, "home")],
                          on_reading=pipeline.feed_reading, policy=TimePolicy(clock="sensor"), clock_synced=lambda: True,
                          on_power=lambda p: pipeline.publish_power(p.meter_id, p.import_w, p.export_w))
    sub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sub.connect(str(tmp_path / "live.sock"))
    sub.settimeout(2)
    try:
        time.sleep(0.2)  # the publisher accepts the subscriber
        client.handle(f"/sensor/{NET}/counter", f'[{TS},5000,"Wh"]'.encode())
        client.handle(f"/sensor/{NET}/counter", f'[{TS + 60},5010,"Wh"]'.encode())  # a reading to anchor on
        for i, watts in enumerate((-1200, -800, 300)):  # FLM02 P1: signed net power
            client.handle(f"/sensor/{NET}/gauge", f'[{TS + 61 + i},{watts},"W"]'.encode())
        buf = b""
        deadline = time.monotonic() + 3
        powers = []
        while time.monotonic() < deadline and (not powers or powers[-1] != (300.0, 0.0)):
            try:
                buf += sub.recv(65536)
            except TimeoutError:
                break
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if msg["type"] == "reading" and msg["import_wh_total"] + msg["export_wh_total"] > 0:
                    powers.append((msg["import_w"], msg["export_w"]))
        # the feed follows the gauges (signed net split into non-negative import and export); a
        # subscriber that lags may see only the latest snapshot, never a stale one after it
        assert powers[-1] == (300.0, 0.0)
        assert powers[0] == (None, None)  # the counters' reading itself carried no power yet
    finally:
        sub.close()
        publisher.stop()
