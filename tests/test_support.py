"""The harness itself: the services it provides are real and usable."""

from sqlalchemy import create_engine, text


def test_database_url_is_a_working_database(database_url):
    # Given an empty database from the fixture
    engine = create_engine(database_url)
    # When a table is written and read back
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
        conn.execute(text("INSERT INTO probe (id, name) VALUES (1, 'x')"))
    with engine.connect() as conn:
        # Then the row is there
        assert conn.execute(text("SELECT name FROM probe")).scalar_one() == "x"
    engine.dispose()


def test_postgres_is_real_postgres(postgres_url):
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert "PostgreSQL" in conn.execute(text("SELECT version()")).scalar_one()
    engine.dispose()
