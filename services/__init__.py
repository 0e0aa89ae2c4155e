"""The services above the metering core, one folder per place they run.

- ``node/`` runs on each member's Pi beside the daemon: web page and API, MQTT feed, light, sheet.
- ``community/`` runs on the community's server: fleet ingest, allocation per operation, operator
  API, reconciliation with the grid operator's file, and the key simulator operators run anywhere.
- ``allocation/`` and ``signal.py`` are pure and shared by both sides (no I/O, no MQTT, no HTTP).

Dependencies point down: ``services`` → ``gateway`` → ``gateway.model``; ``node`` and ``community``
never import each other. ``cli`` registers ``quartier allocate``, ``simulate``, ``web`` and
``community``.
"""
