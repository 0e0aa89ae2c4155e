"""``quartier flukso emulate`` (tests, demos) and ``quartier flukso listen`` (installers)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone

DEFAULT_DEVICE = "0123456789abcdef0123456789abcdef"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``quartier flukso emulate|listen``; the work happens in the handlers."""
    p = subparsers.add_parser("flukso", help="Fluksometer sensors over MQTT: emulate one, listen to one")
    sub = p.add_subparsers(dest="flukso_command", required=True, metavar="{emulate,listen}")

    e = sub.add_parser("emulate", help="publish an emulated FLM02/FLM03 to a broker (tests, demos)")
    e.add_argument("--broker", default="127.0.0.1:1883", help="HOST[:PORT] of the broker (default 127.0.0.1:1883)")
    e.add_argument("--firmware", choices=("flm02", "flm03"), default="flm02")
    e.add_argument("--device", default=DEFAULT_DEVICE, help="device id, 32 hex digits")
    e.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    e.add_argument("--start", help="simulated start, ISO 8601 (default: now at speed 1, else 24 h ago)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--pv-kwp", type=float, default=4.0, help="rooftop PV peak power (default 4)")
    e.add_argument("--gauge-interval", type=int, default=1, help="simulated seconds between gauges (default 1)")
    e.add_argument("--counter-interval", type=int, default=None,
                   help="simulated seconds between counters (default: FLM02 on change, FLM03 60)")
    e.add_argument("--qos", type=int, choices=(0, 1), default=0, help="publish QoS (the firmware uses 0)")
    e.add_argument("--no-production", action="store_true", help="no PV inverter clamp")
    e.add_argument("--meter-id", default="flukso-demo", help="meter id used in the printed config")
    e.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    e.set_defaults(func=_emulate)

    li = sub.add_parser("listen", help="show a Fluksometer's sensors and their live values")
    li.add_argument("--broker", required=True, help="HOST[:PORT] of the Fluksometer (port 1883)")
    li.add_argument("--device", default=None, help="only this device's sensor config")
    li.add_argument("--seconds", type=float, default=10.0, help="how long to listen (default 10)")
    li.add_argument("--username", default=None)
    li.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    li.set_defaults(func=_listen)


def _broker(value: str, cmd: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "1883")
    if not host:
        raise SystemExit(f"quartier flukso {cmd}: --broker {value!r}: expected HOST or HOST:PORT")
    try:
        n = int(port)
    except ValueError:
        raise SystemExit(f"quartier flukso {cmd}: --broker {value!r}: port {port!r} is not a number") from None
    if not 1 <= n <= 65535:
        raise SystemExit(f"quartier flukso {cmd}: --broker {value!r}: port must be 1-65535")
    return host, n


def _emulate(args: argparse.Namespace) -> int:
    import re

    from demo.flukso_emulator import FluksoEmulator

    host, port = _broker(args.broker, "emulate")
    if not re.fullmatch(r"[0-9a-f]{32}", args.device):
        raise SystemExit(f"quartier flukso emulate: --device {args.device!r}: expected 32 lower-case hex digits")
    if args.speed <= 0 or args.speed > 3600:
        raise SystemExit(f"quartier flukso emulate: --speed {args.speed}: must be > 0 and <= 3600")
    if args.gauge_interval < 1 or (args.counter_interval is not None and args.counter_interval < 1):
        raise SystemExit("quartier flukso emulate: --gauge-interval and --counter-interval must be >= 1")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if args.start:
        try:
            start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        except ValueError:
            raise SystemExit(f"quartier flukso emulate: --start {args.start!r}: not an ISO 8601 date/time") from None
        start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    elif args.speed == 1:
        start = now
    else:  # faster than real time: start in the past, so it reaches the present only after a while
        day_ago = now - timedelta(days=1)
        start = day_ago.replace(minute=day_ago.minute - day_ago.minute % 15, second=0)
    emu = FluksoEmulator(
        host=host, port=port, firmware=args.firmware, device=args.device, start_time=start, seed=args.seed,
        pv_kwp=args.pv_kwp, speed=args.speed, gauge_interval_s=args.gauge_interval,
        counter_interval_s=args.counter_interval, qos=args.qos, production=not args.no_production, keep_truth=False,
    )
    try:
        emu.connect()
    except ConnectionError:
        raise SystemExit(f"quartier flukso emulate: --broker {args.broker}: no MQTT broker answers there") from None
    print(source_snippet(emu, host, port, args.meter_id), flush=True)
    import signal
    import threading

    stop = threading.Event()  # SIGTERM (systemctl stop, a test) ends the emulation like --duration
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    emu.start()
    try:
        while args.duration is None or time.monotonic() - t0 < args.duration:
            if stop.wait(0.2):
                break
    finally:
        emu.close()
        print(f"# emulator stopped at {emu.sim_time.isoformat()}: {emu.published} messages published, "
              f"{emu.dropped} lost while the broker was away", file=sys.stderr)
    return 0


def source_snippet(emu, host: str, port: int, meter_id: str) -> str:
    """The ``[[sources]]`` block a gateway needs to read this emulator."""
    lines = [
        f"# Fluksometer emulator: {emu.firmware.upper()}, device {emu.device}, {emu.speed:g}x from {emu.sim_time.isoformat()}",
        "[[sources]]",
        'type = "flukso"',
        f'host = "{host}"',
        f"port = {port}",
        f'device = "{emu.device}"',
        f'meter_id = "{meter_id}"',
    ]
    if emu.speed != 1:
        lines.append('clock = "sensor"        # the emulator runs faster than the clock: trust its timestamps')
    lines.append("sensors = [")
    for s in emu.config_sensors(meter_id, f"{meter_id}-pv"):
        extra = f', meter_id = "{s["meter_id"]}"' if "meter_id" in s else ""
        lines.append(f'  {{ id = "{s["id"]}", role = "{s["role"]}"{extra} }},')
    lines.append("]")
    return "\n".join(lines)


def _listen(args: argparse.Namespace) -> int:
    import getpass
    import os
    import threading

    import paho.mqtt.client as mqtt

    from flukso.payload import (
        PayloadError,
        decode_sample,
        parse_config_topic,
        parse_sensor_topic,
    )
    from flukso.sensors import SensorConfigError, parse_sensor_config, suggest_roles

    host, port = _broker(args.broker, "listen")
    sensors: dict = {}
    values: dict[str, dict] = {}
    problems: list[str] = []
    connected = threading.Event()
    refused: list[str] = []
    lock = threading.Lock()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(str(reason_code))
            return
        dev = args.device or "+"
        client.subscribe([("/sensor/+/gauge", 1), ("/sensor/+/counter", 1), (f"/device/{dev}/config/sensor", 1)])
        connected.set()

    def on_message(client, userdata, msg):
        with lock:
            if parse_config_topic(msg.topic) is not None:
                try:
                    sensors.update(parse_sensor_config(msg.payload))
                except SensorConfigError as exc:
                    problems.append(f"{msg.topic}: {exc}")
                return
            st = parse_sensor_topic(msg.topic)
            if st is None:
                return
            v = values.setdefault(st.sensor_id, {})
            try:
                s = decode_sample(msg.topic, msg.payload)
            except PayloadError as exc:
                if exc.kind == "unknown_unit":  # FLM03 V, A, VAR, VARh: fine, just not energy
                    ts, value, unit = json.loads(msg.payload)
                    v[st.kind] = {"ts": ts, "value": str(value), "unit": unit, "retained": bool(msg.retain), "used": False}
                else:
                    v[f"{st.kind}_error"] = exc.reason
                return
            v[st.kind] = {"ts": s.ts, "value": str(s.value), "unit": s.unit, "retained": bool(msg.retain),
                          "used": s.quantity in ("power", "energy")}

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"quartier-listen-{os.getpid()}", clean_session=True)
    if args.username:
        client.username_pw_set(args.username, os.environ.get("FLUKSO_PASSWORD") or getpass.getpass("broker password: "))
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise SystemExit(f"quartier flukso listen: --broker {args.broker}: cannot connect ({exc.strerror or exc})") from None
    client.loop_start()
    try:
        if not connected.wait(5):
            reason = refused[0] if refused else "no answer"
            raise SystemExit(f"quartier flukso listen: --broker {args.broker}: not connected ({reason})")
        time.sleep(args.seconds)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        report = _listen_report(sensors, values, problems, suggest_roles(sensors))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    now = time.time()
    print(f"{len(report['sensors'])} sensors on {args.broker}")
    for s in report["sensors"]:
        desc = "/".join(x for x in (s["type"], s["subtype"], s["class"]) if x) or "?"
        parts = [s["id"], f"#{s['number'] or '?'}", desc, "enabled" if s["enabled"] else "disabled"]
        for kind in ("gauge", "counter"):
            v = s.get(kind)
            if v:
                age = now - v["ts"]
                note = ", retained" if v["retained"] else ""
                note += "" if v["used"] else ", not used by Quartier"
                parts.append(f"{kind} {v['value']} {v['unit']} ({age:.0f} s old{note})")
            if s.get(f"{kind}_error"):
                parts.append(f"{kind} REFUSED: {s[f'{kind}_error']}")
        print("  " + "  ".join(parts))
    for p in problems:
        print(f"problem: {p}")
    if report["suggested"]:
        print("\n# suggested mapping (clamps cannot be guessed: add them with their role)")
        print("sensors = [")
        for sid, role in report["suggested"].items():
            print(f'  {{ id = "{sid}", role = "{role}" }},')
        print("]")
    return 0


def _listen_report(sensors: dict, values: dict, problems: list[str], suggested: dict) -> dict:
    ids = sorted(set(sensors) | set(values), key=lambda i: (int(sensors[i].number) if i in sensors else 10**6, i))
    out = []
    for sid in ids:
        info = sensors.get(sid)
        out.append({
            "id": sid,
            "number": info.number if info else None,
            "enabled": info.enabled if info else True,
            "type": info.type if info else None,
            "subtype": info.subtype if info else None,
            "data_type": info.data_type if info else None,
            "class": info.sensor_class if info else None,
            **values.get(sid, {}),
        })
    return {"sensors": out, "problems": problems, "suggested": {k: str(v) for k, v in suggested.items()}}
