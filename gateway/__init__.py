"""Quartier gateway: readings from any source to closed quarter-hours, the local store and the sinks."""
