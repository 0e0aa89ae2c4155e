"""The simulated meters' clock (gateway/simulated_time.py) and the community server judging collective
alert windows on it (``[server.meter_clock]``): the demo's meters run fast and in the past, and a
scheduled alert at their time must be accepted, published and listed as the nodes will see it."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.simulated_time import SimulatedTime
from services.community.alerts import AlertInputError
from services.community.ledger import Ledger
from services.community.server import BrokerLink, CommunityServer
from tests.community_fixtures import SECRET, roster, write_community

SIM_START = datetime(2026, 6, 21, 11, 0, tzinfo=timezone(timedelta(hours=2)))
ORIGIN = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)  # the real instant the meters read SIM_START


def test_the_simulated_clock_maps_real_time_linearly_from_its_origin() -> None:
    c = SimulatedTime(SIM_START, ORIGIN, 120)
    assert c.at(ORIGIN.timestamp()) == SIM_START.timestamp()
    assert c.at(ORIGIN.timestamp() + 7.5) == (SIM_START + timedelta(minutes=15)).timestamp()  # a quarter-hour
    assert c.real_delay_s(timedelta(minutes=30)) == 15
    with pytest.raises(ValueError, match="time zone"):
        SimulatedTime(SIM_START.replace(tzinfo=None), ORIGIN, 60)
    with pytest.raises(ValueError, match="speed"):
        SimulatedTime(SIM_START, ORIGIN, 0)


def test_the_server_judges_alert_windows_on_the_meters_clock_not_its_own(tmp_path: Path) -> None:
    real = (ORIGIN + timedelta(seconds=10)).timestamp()  # the simulated meters are at 11:20 (120x)
    ledger = Ledger(tmp_path / "community.sqlite")
    published: list[tuple[str, bytes]] = []
    try:
        sim = SimulatedTime(SIM_START, ORIGIN, 120)
        srv = CommunityServer(roster(tmp_path), ledger, BrokerLink("127.0.0.1", 1), clock=lambda: real,
                              meter_clock=lambda: sim.at(real))
        srv.client.publish = lambda topic, payload, **kw: published.append((topic, payload)) or type("I", (), {"rc": 0})()
        at = SIM_START + timedelta(minutes=30)
        rec = srv.raise_alert("op1", kind="reduce", message="peak at the cabin", minutes=30, start=at)
        assert (rec.start, rec.until) == (at, at + timedelta(minutes=30))
        assert rec.status(datetime.fromtimestamp(srv.meter_clock(), timezone.utc)) == "scheduled"
        assert b'"peak at the cabin"' in published[-1][1]  # published for the nodes to start it on their clock
        # the same request on the server's own (real) clock: years after the meters' window, refused
        plain = CommunityServer(roster(tmp_path), ledger, BrokerLink("127.0.0.1", 1), clock=lambda: real)
        with pytest.raises(AlertInputError, match="already be over"):
            plain.raise_alert("op1", kind="reduce", message="", minutes=30, start=at)
    finally:
        ledger.close()


def test_server_config_reads_the_meter_clock_and_refuses_a_naive_time(tmp_path: Path) -> None:
    from services.community.config import ConfigError, load_server_config

    write_community(tmp_path)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[server]\npseudonym_secret = "{SECRET}"\n')
    os.chmod(secrets, 0o600)
    cfg = tmp_path / "server.toml"
    base = 'secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\n[server.meter_clock]\n'
    cfg.write_text(base + f'start = "{SIM_START.isoformat()}"\norigin = "{ORIGIN.isoformat()}"\nspeed = 60.0\n')
    mc = load_server_config(cfg).server.meter_clock
    assert mc is not None and (mc.start, mc.origin, mc.speed) == (SIM_START, ORIGIN, 60.0)
    cfg.write_text(base + 'start = "2026-06-21T11:00:00"\norigin = "2030-01-01T12:00:00Z"\nspeed = 60\n')
    with pytest.raises(ConfigError, match=r"server.meter_clock.start.*time zone"):
        load_server_config(cfg)
