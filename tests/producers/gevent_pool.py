"""A process patched by gevent before it imports anything else, as Celery's gevent pool patches its
worker: ``python -m tests.producers.gevent_pool DATABASE_URL TASKS`` (see ``gevent_app.pool_main``)."""

from gevent import monkey

monkey.patch_all()

from tests.producers.gevent_app import pool_main  # noqa: E402 - after the patching, on purpose

if __name__ == "__main__":
    pool_main()
