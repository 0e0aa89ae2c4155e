"""The node's web service (``quartier web``): local page, read API, live stream, consume-now signal.

Its own process, apart from the metering daemon: it reads the daemon's live feed (gateway/live.py)
and the SQLite store read-only, so nothing here can disturb metering. Modules:

- ``service``: run time (live client, tick, today's totals, MQTT feed wiring);
- ``state``: what is known right now and who to tell;
- ``app``: the FastAPI routes and the server-sent-event stream;
- ``figures``: history and allocation answers (pure);
- ``fleet``: the seam the fleet uplink fills (operation totals, per-quarter-hour figures);
- ``history``: the read-only store; ``live_client``: the daemon's live socket;
- ``server``: uvicorn; ``static/``: the page (html, css, js, fr/nl/en), nothing from a CDN.
"""
