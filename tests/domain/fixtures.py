"""Fixtures over the domain database, shared by ``tests/domain`` and ``tests/handlers``.

``engine``: the domain's tables created in an empty database (SQLite, then a real PostgreSQL),
with the runtime's own engine settings. ``add``: commits rows (the application's writes).
``handle``: runs a handler as the runtime does, in one transaction that commits after it.
``db``: a fresh session to look at the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dify_events.consumers.domain import create_all
from dify_events.consumers.idempotency import make_engine

log = logging.getLogger("tests.handlers")


class Ctx(SimpleNamespace):
    """The part of the runtime's ``HandlerContext`` the handlers use: ``session`` and ``log``."""

    def __init__(self, session: Session):
        super().__init__(session=session, log=logging.LoggerAdapter(log, {}))


@pytest.fixture
def engine(database_url) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=2)
    create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine) -> Callable[[], Session]:
    return lambda: Session(engine, expire_on_commit=False)


@pytest.fixture
def add(engine) -> Callable[..., None]:
    def add(*rows) -> None:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            session.add_all(rows)
    return add


@pytest.fixture
def handle(engine) -> Callable[..., None]:
    def handle(fn, *events) -> None:
        for event in events:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                fn(event, Ctx(session))
    return handle
