"""``events console``: the operator's web console (groups, lag, dead letters, replay plans)."""

from __future__ import annotations

import os
import signal

import click
from rich.console import Console

from dify_events.schemas.errors import EventsError
from dify_events.schemas.settings import get_settings

from ..recovery.times import parse_duration

out = Console()
TOKEN_ENV = "EVENTS_CONSOLE_TOKEN"
METRICS_ENV = "EVENTS_CONSOLE_METRICS"


class ConsoleRefused(EventsError):
    """The console cannot start as asked."""


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 to be reached from other machines (set a token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8088, show_default=True,
              help="Port; 0 picks a free one.")
@click.option("--allow-actions", is_flag=True,
              help=f"Allow redrive and replay from the pages (needs {TOKEN_ENV}); without it the console is read-only.")
@click.option("--interval", default="5s", show_default=True, metavar="DURATION",
              help="How often to measure the groups.")
@click.option("--window", default="10m", show_default=True, metavar="DURATION",
              help="How much history the trend charts show.")
@click.option("--metrics", "metrics_urls", multiple=True, metavar="URL",
              help=f"A group process's Prometheus endpoint (http://pod:9464/metrics), for retries and messages in "
              f"flight. Repeatable; or {METRICS_ENV}=url,url.")
def command(host: str, port: int, allow_actions: bool, interval: str, window: str,
            metrics_urls: tuple[str, ...]) -> None:
    """Serve the console: every group's state, members and lag (with its trend), its dead letters (filter, look,
    redrive with a preview), replay plans, the schema catalogue.

    Read-only and on 127.0.0.1 unless told otherwise. With --allow-actions every request needs the token of
    EVENTS_CONSOLE_TOKEN (a person signs in with their name and the token; scripts send
    `Authorization: Bearer <token>`), and every action is logged with who and what.
    """
    try:
        from waitress import create_server

        from ..console import ConsoleOptions, Sampler, create_app
    except ImportError as exc:
        raise ConsoleRefused(f"the console needs its web dependencies ({exc.name} is missing): "
                             "pip install 'dify-events[console]'") from None
    from .. import registry
    from ..idempotency import make_engine
    from ..logs import configure_logging

    token = os.environ.get(TOKEN_ENV) or None
    if allow_actions and token is None:
        raise ConsoleRefused(f"--allow-actions needs a token: set {TOKEN_ENV} (e.g. to the output of "
                             "`openssl rand -hex 32`) and give it to the people who may act")
    interval_s, window_s = parse_duration(interval).total_seconds(), parse_duration(window).total_seconds()
    if interval_s <= 0 or window_s < interval_s:
        raise ConsoleRefused("--interval must be above 0 and --window at least as long")
    urls = tuple(metrics_urls) or tuple(u.strip() for u in os.environ.get(METRICS_ENV, "").split(",") if u.strip())
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    groups = registry.discover()
    engine = make_engine(settings.database_url, pool_size=1) if settings.database_url else None
    options = ConsoleOptions(allow_actions=allow_actions, token=token, interval_s=interval_s, window_s=window_s,
                             metrics_urls=urls)
    sampler = Sampler(settings, groups, interval_s=interval_s, window_s=window_s, metrics_urls=urls,
                      engine=engine).start()
    server = create_server(create_app(settings, groups, options, sampler), host=host, port=port, threads=8,
                           ident="events-console")
    signal.signal(signal.SIGTERM, lambda *_: server.close())
    mode = "actions allowed, token required" if allow_actions else "read-only" + (", token required" if token else "")
    out.print(f"events console at http://{host}:{server.effective_port}/ ({mode}; {len(groups)} groups, "
              f"prefix {settings.topic_prefix})", highlight=False, soft_wrap=True)
    try:
        server.run()
    except (KeyboardInterrupt, OSError):
        pass
    finally:
        sampler.stop()
        if engine is not None:
            engine.dispose()
