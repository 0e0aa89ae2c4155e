"""The three keys and the named presets built from them (design.md, "Standard presets")."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import AllocationInputError
from .settings import MAX_ROUNDS

KEYS: tuple[str, ...] = ("equal", "specific", "prorata", "mixed")
"""equal: weight 1 each; specific: the agreed share; prorata: the (remaining) demand; mixed: the agreed
share for the members that have one, the rest of the offer pro rata of demand among the others."""

PRESETS: dict[str, tuple[str, ...]] = {
    "fixed-equal": ("equal",),  # clé fixe égale / vaste gelijke verdeelsleutel
    "fixed-specific": ("specific",),  # agreed percentages, fixed
    "prorata": ("prorata",),  # dynamic pro-rata of consumption
    "cascade": ("equal", "equal", "equal"),
    "hybrid": ("equal", "prorata"),
    "aubange": ("equal", "equal", "prorata"),  # the method the Aubange community chose
}


def check_rounds(rounds: object, field: str = "rounds") -> tuple[str, ...]:
    """Validate a list of 1 to 3 key names; raises ``AllocationInputError`` naming the entry."""
    if isinstance(rounds, str) or not isinstance(rounds, Sequence):
        raise AllocationInputError(field, f"expected a list of 1 to {MAX_ROUNDS} keys, got {type(rounds).__name__}")
    if not rounds:
        raise AllocationInputError(field, "at least one round is needed")
    if len(rounds) > MAX_ROUNDS:
        raise AllocationInputError(field, f"{len(rounds)} rounds given, at most {MAX_ROUNDS} are allowed")
    for i, key in enumerate(rounds):
        if key not in KEYS:
            raise AllocationInputError(f"{field}[{i}]", f"unknown key {key!r} (expected one of {', '.join(KEYS)})")
    return tuple(rounds)  # type: ignore[arg-type]


def check_preset(preset: object, field: str = "preset") -> tuple[str, ...]:
    """The rounds of a named preset; raises ``AllocationInputError`` for an unknown name."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise AllocationInputError(field, f"unknown preset {preset!r} (expected one of {', '.join(PRESETS)})")
    return PRESETS[preset]


def resolve_rounds(rounds: object | None, preset: object | None, field_prefix: str = "") -> tuple[str, ...]:
    """Rounds from either an explicit list or a preset name (exactly one of them)."""
    if rounds is not None and preset is not None:
        raise AllocationInputError(f"{field_prefix}preset", "give either rounds or preset, not both")
    if preset is not None:
        return check_preset(preset, f"{field_prefix}preset")
    if rounds is None:
        raise AllocationInputError(f"{field_prefix}rounds", 'missing (give rounds, e.g. ["equal", "prorata"], or a preset)')
    return check_rounds(rounds, f"{field_prefix}rounds")


def parse_key_spec(text: str, field: str = "--keys") -> tuple[str, tuple[str, ...]]:
    """A command-line key choice: a preset name or keys joined by commas (``equal,equal,prorata``).

    Returns ``(label, rounds)``; the label is the text as given, used as a column heading.
    """
    text = text.strip()
    if text in PRESETS:
        return text, PRESETS[text]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1 and parts[0] not in KEYS:
        raise AllocationInputError(
            field,
            f"unknown key or preset {text!r} (presets: {', '.join(PRESETS)}; or keys {', '.join(KEYS)} joined by commas)",
        )
    return text, check_rounds(parts, f"{field} {text!r}")
