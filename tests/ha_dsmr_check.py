"""Checks Quartier's DSMR-reader topics with Home Assistant's own ``dsmr_reader`` integration; run by
the interpreter of the Home Assistant virtual environment (tests/test_dsmr_reader.py).

stdin: ``{"prefix": "dsmr", "messages": [[topic, payload, retain], ...], "units": {path: unit}}``;
stdout: ``{"version", "errors": [...], "sensors": {key: {"device_class", "state_class", "unit"}},
"checked": n}``.

What is Home Assistant's here (imported, never copied): the integration's ``SENSORS`` (the topics it
subscribes to, their units and ``state`` transforms) and its manifest's MQTT topic filters. What is
ours: a payload without a transform must be a number (``float``) wherever Home Assistant declares a
unit, a state class or a numeric device class, as its sensor does; a transformed time must carry its
zone, an enum must be one of its options.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path

import homeassistant.components.dsmr_reader as integration
from homeassistant.components.dsmr_reader.definitions import SENSORS
from homeassistant.components.sensor import SensorDeviceClass
from homeassistant.const import __version__
from paho.mqtt.client import topic_matches_sub

HA_PREFIX = "dsmr"  # the integration's keys are full topics under "dsmr"


def check_payload(key: str, desc, payload: str, errors: list[str]) -> None:
    if desc.state is not None:
        value = desc.state(payload)
        zoned = isinstance(value, datetime) and value.tzinfo is not None
        if desc.device_class == SensorDeviceClass.TIMESTAMP and not zoned:
            errors.append(f"{key}: {payload!r} is not a time with its zone ({value!r})")
        if desc.options is not None and value not in desc.options:
            errors.append(f"{key}: {payload!r} becomes {value!r}, not one of {desc.options}")
        return
    numeric = desc.native_unit_of_measurement is not None or desc.state_class is not None or \
        desc.device_class not in (None, SensorDeviceClass.ENUM, SensorDeviceClass.TIMESTAMP)
    if numeric:
        try:
            if not math.isfinite(float(payload)):
                raise ValueError
        except ValueError:
            errors.append(f"{key}: {payload!r} is not a number")


def main() -> None:
    job = json.load(sys.stdin)
    prefix = job["prefix"]
    sensors = {d.key: d for d in SENSORS}
    manifest = json.loads((Path(integration.__file__).parent / "manifest.json").read_text())
    errors: list[str] = []
    for path, unit in job["units"].items():
        desc = sensors.get(f"{HA_PREFIX}/{path}")
        if desc is None:
            errors.append(f"{path}: Home Assistant's integration has no such topic")
        elif desc.native_unit_of_measurement != unit:
            expected = desc.native_unit_of_measurement
            errors.append(f"{path}: unit {unit!r}, Home Assistant expects {expected and str(expected)!r}")
    checked = 0
    for topic, payload, _retain in job["messages"]:
        if not topic.startswith(prefix + "/"):
            errors.append(f"{topic}: not under the prefix {prefix!r}")
            continue
        key = f"{HA_PREFIX}/{topic[len(prefix) + 1:]}"
        desc = sensors.get(key)
        if desc is None:
            errors.append(f"{topic}: Home Assistant's integration does not subscribe to {key}")
            continue
        if not any(topic_matches_sub(f, key) for f in manifest.get("mqtt", [])):
            errors.append(f"{key}: outside the manifest's topics {manifest.get('mqtt')}")
        try:
            check_payload(key, desc, payload, errors)
        except Exception as exc:  # a transform that raises is what Home Assistant would hit too
            errors.append(f"{key}: {payload!r}: {type(exc).__name__}: {exc}")
        checked += 1
    out = {k: {"device_class": d.device_class and str(d.device_class),
               "state_class": d.state_class and str(d.state_class),
               "unit": d.native_unit_of_measurement and str(d.native_unit_of_measurement)} for k, d in sensors.items()}
    print(json.dumps({"version": __version__, "errors": errors, "sensors": out, "checked": checked}))


if __name__ == "__main__":
    main()
