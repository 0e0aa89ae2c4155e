"""Fluksometer (FLM02, FLM03) sensors over MQTT → the gateway's Readings.

``payload`` (topics and payloads) and ``sensors`` (sensor config, roles) and ``readings`` (samples →
Readings) are pure; ``client`` is the paho-mqtt edge; ``emulator`` publishes an emulated
Fluksometer for tests and demos; ``cli`` adds ``quartier flukso emulate|listen``.
"""
