"""How a meter source plugs into the daemon: the one interface P1, Flukso and the demo meter share.

The gateway core knows readings, not cables. A *source kind* (``p1``, ``flukso``, ``simulated``) is
a package of its own that brings two things: the pydantic model of its ``[[sources]]`` table and a
function that opens a running :class:`Source` on a :class:`ReadingSink` (the daemon's pipeline).
Kinds are found through the ``quartier.sources`` entry-point group declared in ``pyproject.toml``,
so the core imports none of them: a kind missing from an installation is an unknown ``type`` in
the config file, named as such, and nothing else breaks.

Dependencies point one way: ``p1/``, ``flukso/`` and ``demo/`` import ``gateway.model`` and this
module; the gateway imports them only by entry-point name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gateway.model import QuarterHour, Reading

ENTRY_POINT_GROUP = "quartier.sources"


class SourceSettings(BaseModel):
    """Base of every ``[[sources]]`` table: unknown keys are refused, ``type`` names the kind.

    ``credential_keys`` are the keys a kind takes from the secrets file (``[<type>."<meter_id>"]``);
    of those, ``secret_keys`` are refused in the config file itself.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no inf/nan interval or threshold
    credential_keys: ClassVar[frozenset[str]] = frozenset()
    secret_keys: ClassVar[frozenset[str]] = frozenset()

    type: str
    meter_id: str | None = None
    # the most power this connection can carry, W (default daemon.max_power_w); a larger register step
    # is a glitch (gateway/plausibility.py). e-MUCS meters that announce a lower limiter or fuse
    # threshold are held to that.
    max_power_w: float | None = Field(default=None, gt=0, le=10_000_000)
    # what the meter is to the household: the grid connection (the page's and Home Assistant's main
    # meter), a producer (PV inverter) or one consuming circuit. Chosen here, never by arrival order.
    role: Literal["grid", "production", "consumption"] = "grid"

    def role_of(self, meter_id: str) -> str:
        """The role of one of this source's meters (a Fluksometer maps several, by sensor)."""
        return self.role

    def meter_ids(self) -> list[str]:
        """The meters this table names (a P1 meter that announces its own id names none)."""
        return [self.meter_id] if self.meter_id else []

    def serial_of(self, meter_id: str) -> str | None:
        """A stable, globally unique identity of that meter (its serial), or None: Home Assistant's
        ids and the MQTT client id come from it, so renaming the Pi orphans nothing."""
        return None

    @property
    def runs_on_real_time(self) -> bool:
        """Whether this source's meter clock runs in real time, so that a reading far from the
        synchronised Pi clock is refused (daemon.clock_tolerance_s); a simulated meter does not."""
        return False

    def describe(self) -> str:
        """One short line for ``quartier config check`` (the port or host read)."""
        return self.type


class ReadingSink(Protocol):
    """What a source feeds: the daemon's pipeline (``gateway.live.LivePipeline``)."""

    def feed_telegram(self, telegram: Any) -> list[QuarterHour]: ...

    def feed_reading(self, reading: Reading) -> list[QuarterHour]: ...

    def publish_power(self, meter_id: str, import_w: float | None, export_w: float | None) -> None: ...

    def count_refused(self, meter_id: str | None, reason: str, detail: str) -> None: ...


@dataclass(frozen=True)
class SourceContext:
    """What the daemon lends a source when it opens it."""

    sink: ReadingSink
    baseline: Callable[[str], QuarterHour | None]  # the store's last closed quarter-hour of a meter
    clock_synced: Callable[[], bool | None]  # the Pi's clock (NTP) as last checked
    timezone: str


class Source(Protocol):
    """A running source. ``run`` reads until ``stop`` is set or the link drops (the daemon calls it
    again after a pause); ``close`` unblocks it from another thread. ``port`` and ``reconnects``
    go into the health file."""

    port: str | None
    reconnects: int

    def run(self, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceKind:
    """A source package's entry point: its config table and how to open it."""

    settings: type[SourceSettings]
    open: Callable[[Any, SourceContext], Source]


def source_kind_names() -> list[str]:
    """The installed kinds' ``type`` names, without importing any of them."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


@cache
def source_kind(name: str) -> SourceKind | None:
    """One kind by its ``type`` name, imported on first use; None when no package provides it.

    Only the kinds a configuration names are imported: a P1 node never loads the Fluksometer's
    models, which keeps the daemon and the web service inside the node's memory budget."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        kind = ep.load()
        if not isinstance(kind, SourceKind):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a gateway.sources.SourceKind")
        return kind
    return None


def source_settings(items: list[Any]) -> list[SourceSettings]:
    """``[[sources]]`` tables validated by their own kind's model, told apart by ``type``.

    A ``pydantic.ValidationError`` names each problem by its place (``sources.0.port``), as the rest of
    the configuration does; an unknown ``type`` names the installed kinds."""
    from pydantic import ValidationError

    out: list[SourceSettings] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, SourceSettings):
            out.append(item)
            continue
        name = item.get("type") if isinstance(item, dict) else None
        kind = source_kind(name) if isinstance(name, str) else None
        if kind is None:
            known = ", ".join(source_kind_names()) or "none (run `pip install -e .`)"
            errors.append({"type": "value_error", "loc": (i, "type"), "input": name,
                           "ctx": {"error": ValueError(f"unknown source type; installed: {known}")}})
            continue
        try:
            out.append(kind.settings.model_validate(item))
        except ValidationError as exc:
            errors += [{"type": e["type"], "loc": (i, *e["loc"]), "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})}
                       for e in exc.errors()]
    if errors:
        raise ValidationError.from_exception_data("sources", errors)
    return out
