"""Consumer groups and their handlers.

A group is one independent job (as one blinker receiver was in the seed): its own Kafka consumer
group, offsets, retries, dead-letter topic ``<prefix>.dlq.<group>`` and private retry topic
``<prefix>.retry.<group>``. It subscribes to the domain topics of the event types its handlers
take, plus its retry topic::

    group = ConsumerGroup("installed-app-provisioner", max_attempts=5)

    @group.handler(AppWasCreated, max_retry_time_s=60)
    def provision(event: AppWasCreated, ctx: HandlerContext) -> None:
        ctx.session.add(InstalledApp(app_id=event.app_id, tenant_id=event.tenant_id))

Handler options belong to the pipeline's steps (each step lists the options it owns, as
dramatiq's middleware do); an option is looked up on the handler, then the group, then the step's
default. An option no step owns is refused with a hint.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

from .errors import GroupDefinitionError

# SQLAlchemy and the catalogue are imported when a group is made: the package's import, which every
# consumers.* import runs (the CLI's too), loads neither
if TYPE_CHECKING:
    from sqlalchemy import MetaData, Table

    from dify_events.schemas.catalogue import Catalogue
    from dify_events.schemas.events import Event

    from .context import BatchContext, HandlerContext
    from .pipeline import Step

GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")
# How a group's members share its topics. ORDERED: a Kafka consumer group, each partition read by one
# member in order (per-key order; members that help <= partitions). SHARED: a Kafka share group
# (KIP-932), records handed out one by one to any member (no order; any number of members).
ORDERED: Final = "ordered"
SHARED: Final = "shared"
Delivery = Literal["ordered", "shared"]
DELIVERIES = (ORDERED, SHARED)
# options the group itself owns, whatever its pipeline: read by replay tooling, and by the runner,
# whose outage breaker pauses the group (``consumers.breaker``; ``Retries`` feeds it)
GROUP_OPTIONS: dict[str, Any] = {
    "replay_safe": True,
    "outage_threshold": 3,         # messages failing in a row that open the breaker
    "outage_min_backoff_s": 1.0,   # the first pause of an outage
    "outage_max_backoff_s": 30.0,  # the longest pause
    "batch_max": 50,               # most idempotent events in one transaction; 1: one each (consumers.pipeline.batch)
    "batch_max_s": 0.5,            # a batch open this long takes on no more events
    "inline": False,               # first attempts on the poll loop's thread (``GroupRunner``)
}

HandlerFn = Callable[["Event", "HandlerContext"], Any]
E = TypeVar("E", bound="Event")
F = TypeVar("F", bound=Callable[..., Any])
TypedHandlerFn = Callable[[E, "HandlerContext"], Any]  # a handler of the event type E
# a batch handler (its own type kept, so that it may take a wider context, or be called as it is)
BatchHandlerFn = TypeVar("BatchHandlerFn", bound=Callable[[list[Any], "BatchContext"], Any])


@dataclass(frozen=True)
class Handler:
    """One function registered for one event type in one group, with its own options."""

    group: ConsumerGroup = field(repr=False)
    event_type: str
    model: type[Event]
    fn: HandlerFn = field(repr=False)
    name: str
    options: Mapping[str, Any]
    takes_list: bool = False  # a batch handler: fn(events, BatchContext)

    def option(self, name: str) -> Any:
        """The handler's value, else the group's, else the owning step's default."""
        if name in self.options:
            return self.options[name]
        return self.group.option(name)

    def __call__(self, event: Event, ctx: HandlerContext) -> Any:
        """The handler on one event (a batch handler on a list of it, ``ctx`` as given: tests and tools)."""
        return cast(Callable[..., Any], self.fn)([event], ctx) if self.takes_list else self.fn(event, ctx)


class ConsumerGroup:
    """Handlers that share one Kafka consumer group.

    ``options`` are defaults for every handler of the group (``max_attempts=3``, ...); the pipeline
    defaults to ``consumers.pipeline.DEFAULT_PIPELINE``. ``database_url`` overrides the settings'
    database for this group's idempotency table and handler sessions; ``catalogue`` defaults to
    ``schemas.CATALOGUE``. ``tables`` (a ``MetaData`` or ``Table`` objects) are the tables its
    handlers use: ``events run`` refuses to start while one is missing, rather than fail every
    message on it. ``delivery``: ``"ordered"`` (a consumer group: per-key order) or ``"shared"``
    (a share group: a work queue without order, for as many members as there is work).
    """

    def __init__(self, name: str, *, pipeline: Sequence[type[Step]] | None = None,
                 database_url: str | None = None, catalogue: Catalogue | None = None,
                 tables: MetaData | Iterable[Table] = (), delivery: Delivery = ORDERED, **options: Any):
        if not GROUP_NAME.match(name):
            raise GroupDefinitionError(
                f"group name {name!r} is not valid: use 1-200 lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (it becomes part of topic names)")
        if delivery not in DELIVERIES:
            raise GroupDefinitionError(f"group {name!r}: delivery={delivery!r} is not valid: use 'ordered' (per-key "
                                       "order, a consumer group) or 'shared' (no order, a share group)")
        from sqlalchemy import MetaData

        from dify_events.schemas.catalogue import CATALOGUE

        from .pipeline import DEFAULT_PIPELINE

        self.name = name
        self.delivery: Delivery = delivery
        self.pipeline: tuple[type[Step], ...] = tuple(DEFAULT_PIPELINE if pipeline is None else pipeline)
        self.database_url = database_url
        self.catalogue = CATALOGUE if catalogue is None else catalogue
        self.tables: tuple[Table, ...] = tuple(tables.sorted_tables if isinstance(tables, MetaData) else tables)
        self.handlers: dict[str, Handler] = {}
        self._defaults: dict[str, Any] = dict(GROUP_OPTIONS)
        for step in self.pipeline:
            for option, default in step.options.items():
                self._defaults.setdefault(option, default)
        self._check_options(options, f"group {name!r}")
        self.options = dict(options)

    # -- declaring ----------------------------------------------------------------------------
    def handler(self, event_type: type[E] | str, **options: Any) -> Callable[[TypedHandlerFn[E]], TypedHandlerFn[E]]:
        """Decorator: ``fn(event, ctx)`` handles ``event_type`` in this group. Options, each owned
        by a pipeline step (defaults in the step's ``options``): ``max_attempts``,
        ``max_retry_time_s``, ``min_backoff_s``, ``max_backoff_s``, ``retry_on``, ``pause_on``
        (``Retries``); ``idempotent`` (``Idempotency``); ``time_limit_s`` (``TimeLimit``);
        ``replay_safe`` (the group's own: replay tooling asks for ``--force`` when False)."""
        return self._register(event_type, options, takes_list=False)

    def batch_handler(self, event_type: type[Event] | str,
                      **options: Any) -> Callable[[BatchHandlerFn], BatchHandlerFn]:
        """Decorator: ``fn(events, ctx)`` handles a list of ``event_type`` events in one call, ``ctx`` a
        ``BatchContext``. In a batch's transaction, each contiguous run of its events is one call in one
        savepoint; alone (and on every retry) it gets a one-element list. Options as ``handler``'s; it must
        be ``idempotent`` and ``batched`` (``consumers.pipeline.batch``)."""
        return self._register(event_type, options, takes_list=True)

    def _register(self, event_type: type[Event] | str, options: dict[str, Any], *,
                  takes_list: bool) -> Callable[[F], F]:
        spec = self.catalogue.get(event_type if isinstance(event_type, str) else event_type.event_type)

        def register(fn: F) -> F:
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
            self._check_options(options, f"handler {name}")
            per_group = sorted(o for o in options if o.startswith(("outage_", "batch_max", "inline")))
            if per_group:
                raise GroupDefinitionError(f"handler {name}: {', '.join(per_group)} belong(s) to the group (it "
                                           "pauses, batches and runs as a whole): give them to "
                                           f"ConsumerGroup({self.name!r}, ...)")
            if spec.event_type in self.handlers:
                raise GroupDefinitionError(
                    f"group {self.name!r} already has a handler for {spec.event_type} "
                    f"({self.handlers[spec.event_type].name}); one group runs one handler per event type: "
                    "do both jobs in one function, or put the second in its own group")
            # the runtime calls fn only with events its model decoded
            handler = Handler(self, spec.event_type, spec.model, cast(HandlerFn, fn), name, dict(options), takes_list)
            if takes_list and not (handler.option("idempotent") and handler.option("batched")):
                raise GroupDefinitionError(f"batch handler {name}: it must be idempotent and batched (its events "
                                           "share one transaction): drop idempotent=False / batched=False, or declare "
                                           "it with group.handler() to take one event at a time")
            self.handlers[spec.event_type] = handler
            return fn

        return register

    def _check_options(self, options: Mapping[str, Any], where: str) -> None:
        for option in options:
            if option not in self._defaults:
                close = difflib.get_close_matches(option, self._defaults, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise GroupDefinitionError(
                    f"{where}: unknown option {option!r}. {hint}Options belong to pipeline steps; this "
                    f"group's steps ({', '.join(s.__name__ for s in self.pipeline)}) know: "
                    f"{', '.join(sorted(self._defaults))}. Did you forget to add the step that owns it?")

    # -- reading ------------------------------------------------------------------------------
    def option(self, name: str) -> Any:
        if name in self.options:
            return self.options[name]
        try:
            return self._defaults[name]
        except KeyError:
            raise GroupDefinitionError(f"no step of group {self.name!r} owns the option {name!r}") from None

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.handlers)

    def domain_topics(self, prefix: str) -> list[str]:
        """The domain topics of the event types this group handles, sorted."""
        return sorted({self.catalogue.get(t).topic(prefix) for t in self.handlers})

    def retry_topic(self, prefix: str) -> str:
        return f"{prefix}.retry.{self.name}"

    def dlq_topic(self, prefix: str) -> str:
        return f"{prefix}.dlq.{self.name}"

    def topics(self, prefix: str) -> list[str]:
        """Everything the group subscribes to: its domain topics and its retry topic."""
        return [*self.domain_topics(prefix), self.retry_topic(prefix)]

    def __repr__(self) -> str:
        shared = f", delivery={self.delivery!r}" if self.delivery != ORDERED else ""
        return f"ConsumerGroup({self.name!r}, handlers={sorted(self.handlers)}{shared})"


def handler_names(groups: Iterable[ConsumerGroup]) -> list[str]:
    return [h.name for g in groups for h in g.handlers.values()]
