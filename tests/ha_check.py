"""Checks a Quartier device discovery message with Home Assistant's own code; run by the interpreter of
a virtual environment that has the ``homeassistant`` package (tests/test_ha_discovery.py makes it).

stdin: ``{"config": <device discovery payload>, "energy": {"grid_import": [keys], "grid_export": [...],
"production": [...], "gas": [...], "water": [...]}}``; stdout: ``{"version", "errors": [...],
"checked": n, "newer": [component.key accepted only by later releases]}``.

What is Home Assistant's here (imported, never copied): the MQTT platforms' ``DISCOVERY_SCHEMA``, the
device and origin schemas, the abbreviation tables, the sensor rules (units per device class, state
classes per device class, non-numeric classes) and the Energy dashboard's accepted device classes and
units. What is ours: merging the device-level options into each component as device-based discovery
(Home Assistant 2024.12+, newer than the last release installable on Python 3.11) does, and
reporting keys a schema would drop silently (``REMOVE_EXTRA``), since a misspelt key is an error.
"""

from __future__ import annotations

import json
import sys

from homeassistant.components.energy import validate as energy
from homeassistant.components.mqtt import binary_sensor as mqtt_binary_sensor
from homeassistant.components.mqtt import sensor as mqtt_sensor
from homeassistant.components.mqtt.abbreviations import ABBREVIATIONS, DEVICE_ABBREVIATIONS, ORIGIN_ABBREVIATIONS
from homeassistant.components.mqtt.discovery import MQTT_ORIGIN_INFO_SCHEMA
from homeassistant.components.sensor import const as sensor_const
from homeassistant.const import __version__

SCHEMAS = {"sensor": mqtt_sensor.DISCOVERY_SCHEMA, "binary_sensor": mqtt_binary_sensor.DISCOVERY_SCHEMA}
SHARED_ONLY = {"cmps", "o", "origin"}  # device-level keys that are not component options
# component keys that Home Assistant accepts only after the release installed here (it is the newest
# installable on Python 3.11): reported apart, never silently accepted
NEWER_KEYS = {"sensor": {"options"}}  # an enum sensor's options (MQTT sensor, after 2024.3)


def expand(d: dict, table: dict) -> dict:
    return {table.get(k, k): v for k, v in d.items()}


def sensor_rules(key: str, c: dict, errors: list[str]) -> None:
    """The rules HA's SensorEntity applies to a sensor's class, state class and unit."""
    dc, sc, unit = c.get("device_class"), c.get("state_class"), c.get("unit_of_measurement")
    if dc is None:
        if c.get("last_reset_value_template") and sc != "total":
            errors.append(f"{key}: last_reset needs state_class total")
        return
    dc = sensor_const.SensorDeviceClass(dc)
    if dc in sensor_const.NON_NUMERIC_DEVICE_CLASSES:
        if sc is not None or unit is not None:
            errors.append(f"{key}: non-numeric device class {dc} with state_class {sc!r} / unit {unit!r}")
        return
    allowed_units = sensor_const.DEVICE_CLASS_UNITS.get(dc)
    if allowed_units is not None and unit not in allowed_units:
        errors.append(f"{key}: unit {unit!r} is not one of {dc}'s units")
    allowed_sc = sensor_const.DEVICE_CLASS_STATE_CLASSES.get(dc)
    if sc is not None and allowed_sc is not None and sensor_const.SensorStateClass(sc) not in allowed_sc:
        errors.append(f"{key}: state_class {sc} not allowed for device class {dc}")
    if c.get("last_reset_value_template") and sc != "total":
        errors.append(f"{key}: last_reset needs state_class total")


def energy_source(key: str, c: dict | None, classes, units, errors: list[str]) -> None:
    """What the Energy dashboard's validation accepts for a consumption, production or gas source."""
    if c is None:
        errors.append(f"energy source {key}: no such component")
        return
    dc = c.get("device_class")
    if dc not in classes:
        errors.append(f"energy source {key}: device class {dc!r} not in {list(classes)}")
    elif c.get("unit_of_measurement") not in units.get(dc, ()):
        errors.append(f"energy source {key}: unit {c.get('unit_of_measurement')!r} not in {units.get(dc)}")
    sc = c.get("state_class")
    if sc not in ("total", "total_increasing"):
        errors.append(f"energy source {key}: state_class {str(getattr(sc, 'value', sc))!r} (needs total or total_increasing)")
    if c.get("enabled_by_default") is False:
        errors.append(f"energy source {key}: disabled by default")


def main() -> None:
    job = json.load(sys.stdin)
    cfg = expand(job["config"], ABBREVIATIONS)
    errors: list[str] = []
    if "device" in cfg:
        cfg["device"] = expand(cfg["device"], DEVICE_ABBREVIATIONS)
    origin = cfg.get("origin") or cfg.get("o")
    if origin is None:
        errors.append("no origin")
    else:
        try:
            MQTT_ORIGIN_INFO_SCHEMA(expand(origin, ORIGIN_ABBREVIATIONS))
        except Exception as exc:
            errors.append(f"origin: {exc}")
    shared = {k: v for k, v in cfg.items() if k not in SHARED_ONLY}
    cmps = cfg.get("cmps") or cfg.get("components") or {}
    ids: set[str] = set()
    checked = 0
    newer: set[str] = set()
    merged: dict[str, dict] = {}
    for key, comp in cmps.items():
        comp = expand(comp, ABBREVIATIONS)
        platform = comp.get("p") or comp.get("platform")
        if set(comp) <= {"p", "platform"}:
            continue  # a removal marker: nothing to validate
        if platform not in SCHEMAS:
            errors.append(f"{key}: platform {platform!r} not checked here")
            continue
        options = {**shared, **{k: v for k, v in comp.items() if k not in ("p", "platform")}}
        try:
            validated = SCHEMAS[platform](dict(options))
        except Exception as exc:
            errors.append(f"{key}: {exc}")
            continue
        dropped = set(options) - set(validated)
        newer.update(f"{key}.{k}" for k in dropped & NEWER_KEYS.get(platform, set()))
        dropped -= NEWER_KEYS.get(platform, set())
        if dropped:
            errors.append(f"{key}: keys Home Assistant ignores: {sorted(dropped)}")
        uid = validated.get("unique_id")
        if not uid or uid in ids:
            errors.append(f"{key}: unique_id {uid!r} missing or repeated")
        ids.add(uid)
        if platform == "sensor":
            sensor_rules(key, validated, errors)
        merged[key] = validated
        checked += 1
    kinds = job.get("energy") or {}
    for key in kinds.get("grid_import", []) + kinds.get("grid_export", []) + kinds.get("production", []):
        energy_source(key, merged.get(key), energy.ENERGY_USAGE_DEVICE_CLASSES, energy.ENERGY_USAGE_UNITS, errors)
    for key in kinds.get("gas", []):
        energy_source(key, merged.get(key), energy.GAS_USAGE_DEVICE_CLASSES, energy.GAS_USAGE_UNITS, errors)
    for key in kinds.get("water", []):
        energy_source(key, merged.get(key), energy.WATER_USAGE_DEVICE_CLASSES, energy.WATER_USAGE_UNITS, errors)
    print(json.dumps({"version": __version__, "errors": errors, "checked": checked, "newer": sorted(newer)}))


if __name__ == "__main__":
    main()
