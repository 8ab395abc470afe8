"""The ``events`` command line: one command for people, a subcommand per job."""

from __future__ import annotations

import gc
import importlib
import pkgutil
import sys

import click
from pydantic import ValidationError
from rich.console import Console

from dify_events.schemas.errors import EventsError

from ..redact import mask_credentials

err = Console(stderr=True)


class EventsGroup(click.Group):
    """Subcommands are the modules of this package that define ``command`` (``broker.py`` ->
    ``events broker``), imported only when used, so ``events broker start`` does not pay for the
    demo's imports. The platform's own errors become one red line and exit code 1, not a traceback."""

    def list_commands(self, ctx):
        return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))

    def get_command(self, ctx, name):
        if name not in self.list_commands(ctx):
            return None
        command = getattr(importlib.import_module(f"{__name__}.{name}"), "command", None)
        return command if isinstance(command, click.Command) else None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EventsError, ValidationError, ValueError) as exc:
            cause = exc.__cause__
            clearer = explain(cause) if cause is not None and type(cause).__name__ == "KafkaException" else None
            message = clearer or str(exc)
        except Exception as exc:  # noqa: BLE001 - Kafka's and the database's own errors, said in one line
            explained = explain(exc)
            if explained is None:
                raise
            message = explained
        finally:
            # A Kafka client still alive at exit() races OpenSSL's exit handlers from its own threads
            # (a SIGSEGV after the command's last line): those the command left in reference cycles
            # are destroyed now, while the interpreter is whole (rd_kafka_destroy joins their threads).
            gc.collect()
        _fail(message)  # outside the except clause: the exit carries no traceback holding the command's frames


def _fail(message: str) -> None:
    err.print("[bold red]error:[/] ", end="", highlight=False)
    err.print(mask_credentials(message), highlight=False, soft_wrap=True, markup=False)
    sys.exit(1)


def _why_unreachable(timeout_s: float = 5.0) -> str | None:
    """An authentication or TLS failure, in librdkafka's words, when that is why the cluster did
    not answer (a metadata request that listens to the error callback); None when it is not."""
    import logging

    from dify_events.schemas.topics import admin_client, cluster_metadata

    quiet = logging.getLogger("consumers.cli.probe")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    try:
        admin = admin_client(logger=quiet)
    except Exception:  # noqa: BLE001 - the probe is a courtesy: the first error stands
        return None
    try:
        cluster_metadata(admin, timeout_s)
        return None
    except Exception:  # noqa: BLE001 - as above
        return admin.refusal.str() if admin.refusal is not None else None


def explain(exc: BaseException) -> str | None:
    """One clear sentence for an error of Kafka (librdkafka) or of the database (SQLAlchemy), or
    None for anything else (a bug: its traceback is worth seeing)."""
    from confluent_kafka import KafkaError, KafkaException
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        reason = error.str() if error is not None else str(exc)
        code = error.code() if error is not None else None
        if code == KafkaError._SSL or "certificate" in reason.lower() or "SSL handshake" in reason:
            return (f"the TLS connection to the Kafka cluster failed: {reason} (is ssl.ca.location the CA "
                    "that signed the broker's certificate?)")
        if code in (KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION) or "uthenticat" in reason:
            return (f"the Kafka cluster refused our credentials: {reason} (check sasl.username / sasl.password "
                    "in EVENTS_CONFIG_FILE or EVENTS_KAFKA_SASL_*)")
        if code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
                    KafkaError._RESOLVE):
            why = _why_unreachable()  # librdkafka says why only in its logs: ask once more, listening
            if why is not None:
                return explain(KafkaException(KafkaError(KafkaError._AUTHENTICATION, why)))
            return (f"cannot reach the Kafka cluster: {reason} (is it running, and are KAFKA_BOOTSTRAP_SERVERS "
                    "and the security settings right?)")
        return f"Kafka: {reason}"
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("psycopg", "psycopg2"):
        return (f"the database URL needs the {exc.name} driver, which is not installed: pip install "
                f"'dify-events[{exc.name}]', or name the installed one in the URL: postgresql+psycopg:// "
                "(psycopg 3) or postgresql+psycopg2:// (plain postgresql:// is SQLAlchemy's default driver)")
    if isinstance(exc, (NoSuchModuleError, ArgumentError)):
        return f"the database URL is not usable: {exc}"
    if isinstance(exc, SQLAlchemyError):
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return f"cannot use the database: {first} (check EVENTS_DATABASE_URL or --database-url)"
    return None


@click.group(cls=EventsGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dify's event system on Apache Kafka: publish typed events, run consumer groups, recover."""
