"""Connecting with an MQTT v5 session that outlives the connection: one helper for both ends.

The node's uplink and the community server each keep a persistent session so that the broker
queues their QoS 1 messages while they are away (allocations for a node, quarter-hours for the
server). Every connect, the first one after a restart too, asks to resume it; 0 asks for a clean one.
"""

from __future__ import annotations

from typing import Any


def connect_async(client: Any, host: str, port: int, *, keepalive: int, session_expiry_s: int) -> None:
    """``client.connect_async`` (a paho MQTT v5 client) with the session this asks for."""
    if session_expiry_s <= 0:
        client.connect_async(host, port, keepalive=keepalive, clean_start=True)
        return
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    client.connect_async(host, port, keepalive=keepalive, clean_start=False, properties=props)
