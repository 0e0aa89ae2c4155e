"""Run the web service under uvicorn (``quartier web``)."""

from __future__ import annotations

import signal

from gateway.logs import get_logger
from services.node.web.fleet import Fleet

log = get_logger("quartier.services.web")


def build(cfg, *, fleet: Fleet | None = None):
    """The FastAPI app for a :class:`gateway.config.Config`, with the MQTT feed when enabled."""
    from services.node.web.app import create_app
    from services.node.web.service import WebService, WebSettings

    feed = None
    if cfg.mqtt.enabled:
        from services.node.mqtt_feed import FeedSettings, MqttFeed

        feed = MqttFeed(FeedSettings.from_config(cfg.mqtt, web_port=cfg.web.port))
    service = WebService(WebSettings.from_config(cfg), fleet=fleet, mqtt_feed=feed)
    return create_app(service)


def serve(cfg, *, host: str | None = None, port: int | None = None, fleet: Fleet | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers; open streams get two seconds to finish)."""
    import uvicorn

    app = build(cfg, fleet=fleet)
    config = uvicorn.Config(
        app,
        host=host or cfg.web.host,
        port=cfg.web.port if port is None else port,
        log_config=None,  # keep quartier's key=value logging
        access_log=False,
        timeout_graceful_shutdown=2,
        lifespan="on",
        loop="asyncio",
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler found
    # at start: make that a clean exit (status 0, as systemd and `quartier demo` expect)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    log.info("web.serving", extra={"url": f"http://{config.host}:{config.port}/"})
    server.run()


def _exit_cleanly(_signum, _frame) -> None:
    raise SystemExit(0)
