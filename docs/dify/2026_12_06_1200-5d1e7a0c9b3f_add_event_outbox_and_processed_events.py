"""add event_outbox and processed_events (dify-events)

The two tables the dify-events platform keeps in Dify's database: ``event_outbox`` (events the
signals add in the caller's transaction, published by ``events outbox relay``) and
``processed_events`` (the consumer groups' idempotency claims). Identical to what
``producers.outbox.create_outbox_table`` and ``consumers.idempotency.create_table`` create.

Copy this file into Dify's ``api/migrations/versions/``, set ``down_revision`` to the head your
Dify has (``flask db heads``), then run ``flask db upgrade``. See docs/adopting-in-dify.md.

Revision ID: 5d1e7a0c9b3f
Revises: (your Dify's head)
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "5d1e7a0c9b3f"
down_revision = None  # set to your Dify's current head (`flask db heads`) before `flask db upgrade`
branch_labels = None
depends_on = None

PENDING = sa.text("sent_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True,
                  comment="insertion order: the relay publishes each key's rows in this order"),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.String(255), nullable=False, comment="the Kafka message key (the aggregate id)"),
        sa.Column("payload", sa.LargeBinary(), nullable=False, comment="the Avro single-object-encoded event"),
        sa.Column("headers", sa.JSON(), nullable=False, comment="[[name, UTF-8 value], ...], trace context included"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True,
                  comment="set once the broker acknowledged the row"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_event_outbox_pending", "event_outbox", ["id"], postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_event_outbox_pending_key", "event_outbox", ["key", "id"], postgresql_where=PENDING,
                    sqlite_where=PENDING)
    op.create_index("ix_event_outbox_sent_at", "event_outbox", ["sent_at"])
    op.create_table(
        "processed_events",
        sa.Column("group_name", sa.String(200), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("event_outbox")
