"""The one error type the allocation package raises for bad input."""

from __future__ import annotations


class AllocationInputError(ValueError):
    """Input the engine refuses, with the field it concerns.

    ``field`` is a path a user can find in what they wrote (``rounds[3]``,
    ``quarter_hours[4].consumption_wh.m01``, ``operations[0].members[2].share``); ``str(exc)`` is
    the one-line message a command prints: ``"<field>: <reason>"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
