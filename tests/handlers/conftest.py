from tests.domain.fixtures import add, db, engine, handle  # noqa: F401 - fixtures
