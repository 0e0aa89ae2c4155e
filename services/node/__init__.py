"""Runs on each member's Raspberry Pi, next to the metering daemon, in processes of its own.

``web/`` (page, API, consume-now signal), ``mqtt_feed`` (Home Assistant), ``light`` (GPIO), ``sheet``
(printable monthly sheet): each reads the daemon's live socket and the store, never the meter.
"""
