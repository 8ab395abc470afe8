"""``events publish``: validate events given as JSON, publish them, say where each one landed."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from dify_events.schemas.errors import EventsError
from dify_events.schemas.headers import idempotency_key_problem

if TYPE_CHECKING:
    from dify_events.producers.producer import EventProducer

out = Console()


class PublishInputError(EventsError):
    """The input is not JSON objects, or not valid events of the type named."""


@click.command("publish")
@click.argument("event_type")
@click.argument("stdin", required=False, metavar="[-]")
@click.option("--json", "json_text", metavar="OBJECT", help="One event, as a JSON object.")
@click.option("--file", "file_", type=click.File("r"), metavar="FILE",
              help="Events as JSON objects, one a line ('-' is standard input).")
@click.option("--key", help="Message key for every event (default: the event's aggregate id).")
@click.option("--idempotency-key", callback=lambda _ctx, _param, key: _checked_key(key),
              help="Business idempotency key (one event only; default: the event id).")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the broker's acknowledgements, in all.")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json: one JSON object a line per event, for scripts.")
def command(event_type: str, stdin: str | None, json_text: str | None, file_: IO[str] | None, key: str | None,
            idempotency_key: str | None, timeout: float, output: str) -> None:
    """Publish events of EVENT_TYPE given with --json, --file, or '-' (standard input, one JSON
    object a line). Every event is validated before any is sent; each is published with the
    broker's acknowledgement awaited. Exits non-zero if any event was not published.

    \b
    events publish app_was_created --json '{"tenant_id": "t1", "app_id": "a1", "mode": "chat",
                                            "name": "Support bot", "created_by": "u1"}'
    cat events.jsonl | events publish message_was_created -
    """
    from dify_events.schemas.catalogue import CATALOGUE

    if stdin not in (None, "-"):
        raise click.UsageError(f"unexpected argument {stdin!r}: give the events with --json, --file or '-'")
    sources = [s for s in (json_text is not None, file_ is not None, stdin == "-") if s]
    if len(sources) != 1:
        raise click.UsageError("give the events one way: --json OBJECT, --file FILE, or '-' for standard input")
    spec = CATALOGUE.get(event_type)  # UnknownEventType lists the known types
    if json_text is not None:
        records = [("--json", _parse(json_text, "--json"))]
    else:
        records = _read_lines(file_ if file_ is not None else sys.stdin)
    if not records:
        raise PublishInputError("no events in the input")
    if idempotency_key and len(records) > 1:
        raise PublishInputError("--idempotency-key names one event; the input holds "
                                f"{len(records)} (each event's own id is its idempotency key)")
    events = _validate(spec, records)

    from dify_events.producers.errors import PublishError
    from dify_events.producers.producer import Delivery, EventProducer

    outcomes: Sequence[Delivery | PublishError | None]  # publish(wait=True) gives a Delivery, never None
    with EventProducer(poll_thread=True) as producer:
        _check_sendable(producer, [where for where, _ in records], events, key, idempotency_key)
        topic = producer.topic_of(spec.event_type)
        if producer.missing_topics([topic], timeout=min(timeout, 10.0)):
            raise EventsError(f"nothing was published: the topic {topic} does not exist "
                              "(`events topics apply` creates the domain topics)")
        if len(events) == 1:
            try:
                outcomes = [producer.publish(events[0], key=key, idempotency_key=idempotency_key, wait=True,
                                             timeout=timeout)]
            except PublishError as exc:
                outcomes = [exc]
        else:
            outcomes = producer.publish_many(events, key=key, timeout=timeout)
    failed = [o for o in outcomes if isinstance(o, PublishError)]
    _show(events, outcomes, output)
    if failed:
        raise EventsError(f"{len(failed)} of {len(events)} events were not published; first: {failed[0]}")


def _checked_key(key: str | None) -> str | None:
    problem = idempotency_key_problem(key) if key is not None else None
    if problem:
        raise click.BadParameter(problem)
    return key


def _parse(text: str, where: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise PublishInputError(f"{where}: not JSON: {exc}") from None
    except RecursionError:
        raise PublishInputError(f"{where}: the JSON is nested too deeply to be an event") from None
    if not isinstance(value, dict):
        raise PublishInputError(f"{where}: an event is a JSON object, not {type(value).__name__}")
    return value


def _read_lines(stream: IO[str]) -> list[tuple[str, dict]]:
    return [(f"line {n}", _parse(line, f"line {n}")) for n, line in enumerate(stream, 1) if line.strip()]


def _validate(spec, records: list[tuple[str, dict]]) -> list:
    from pydantic import ValidationError

    events, problems = [], []
    for where, record in records:
        try:
            events.append(spec.model.model_validate(record))
        except ValidationError as exc:
            problems.append(f"{where}: not a valid {spec.event_type}: {exc}")
    if problems:
        raise PublishInputError(f"nothing was published; {len(problems)} of {len(records)} events are invalid:\n"
                                + "\n".join(problems))
    return events


def _check_sendable(producer: EventProducer, wheres: list[str], events: list, key: str | None,
                    idempotency_key: str | None) -> None:
    """Encodes every event and checks its size with its headers before the first is sent: one that
    cannot go means none goes."""
    from dify_events.producers.errors import PublishError

    problems = []
    for where, event in zip(wheres, events, strict=True):
        try:
            producer.check(event, key=key, idempotency_key=idempotency_key)
        except PublishError as exc:
            problems.append(f"{where}: {exc.reason}")
    if problems:
        raise PublishInputError(f"nothing was published; {len(problems)} of {len(events)} events cannot be sent:\n"
                                + "\n".join(problems))


def _show(events, outcomes, output: str) -> None:
    from dify_events.producers.errors import PublishError

    if output == "json":
        for event, outcome in zip(events, outcomes, strict=True):
            row = {"event_id": event.event_id, "event_type": event.event_type}
            if isinstance(outcome, PublishError):
                row.update(error=str(outcome), code=outcome.code)
            else:
                row.update(topic=outcome.topic, partition=outcome.partition, offset=outcome.offset)
            click.echo(json.dumps(row))
        return
    table = Table(title=f"{len(events)} {events[0].event_type} event(s)")
    table.add_column("event id", no_wrap=True, min_width=36)
    table.add_column("topic", overflow="fold")
    table.add_column("partition", justify="right")
    table.add_column("offset", justify="right")
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, PublishError):
            table.add_row(event.event_id, f"[red]not published: {outcome.reason}[/]", "", "")
        else:
            table.add_row(event.event_id, outcome.topic, str(outcome.partition), str(outcome.offset))
    out.print(table)
