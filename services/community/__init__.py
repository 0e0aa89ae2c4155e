"""The community server: gathers every member's quarter-hours over MQTT, runs the provisional
allocation per sharing operation, publishes each operation's live totals and consume-now signal back
to its nodes. ``wire`` (topics, payloads, pseudonyms) is shared with the node's uplink
(``gateway.uplink``); ``broker`` generates the Mosquitto security configuration.
"""
