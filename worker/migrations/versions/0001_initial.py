"""initial schema: threads, calls, legs, journal, requests

Revision ID: 0001
Revises:
Create Date: 2026-11-24 19:08:18.008444
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=True),
        sa.Column("interaction_id", sa.String(length=255), nullable=True),
        sa.Column("thread_key", sa.String(length=255), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal")),
    )
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.create_index(
            "ix_journal_interaction_id_fingerprint", ["interaction_id", "fingerprint"], unique=False
        )
        batch_op.create_index(
            "ix_journal_outcome_received_at", ["outcome", "received_at"], unique=False
        )

    op.create_table(
        "requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("interaction_id", sa.String(length=255), nullable=False),
        sa.Column("leg", sa.String(length=30), nullable=False),
        sa.Column("crm", sa.String(length=10), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_requests_interaction_id"), ["interaction_id"], unique=False
        )

    op.create_table(
        "threads",
        sa.Column("thread_key", sa.String(length=255), nullable=False),
        sa.Column("top_level_interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("top_level_call_id", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("thread_key", name=op.f("pk_threads")),
    )
    op.create_table(
        "calls",
        sa.Column("interaction_id", sa.String(length=255), nullable=False),
        sa.Column("thread_key", sa.String(length=255), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("sync_state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_key"], ["threads.thread_key"], name=op.f("fk_calls_thread_key_threads")
        ),
        sa.PrimaryKeyConstraint("interaction_id", name=op.f("pk_calls")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calls_sync_state"), ["sync_state"], unique=False)
        batch_op.create_index(batch_op.f("ix_calls_thread_key"), ["thread_key"], unique=False)

    op.create_table(
        "call_legs",
        sa.Column("interaction_id", sa.String(length=255), nullable=False),
        sa.Column("leg", sa.String(length=30), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=20), nullable=True),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["calls.interaction_id"],
            name=op.f("fk_call_legs_interaction_id_calls"),
        ),
        sa.PrimaryKeyConstraint("interaction_id", "leg", name=op.f("pk_call_legs")),
    )
    with op.batch_alter_table("call_legs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_call_legs_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("call_legs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_legs_next_attempt_at"))

    op.drop_table("call_legs")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calls_thread_key"))
        batch_op.drop_index(batch_op.f("ix_calls_sync_state"))

    op.drop_table("calls")
    op.drop_table("threads")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_requests_interaction_id"))

    op.drop_table("requests")
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.drop_index("ix_journal_outcome_received_at")
        batch_op.drop_index("ix_journal_interaction_id_fingerprint")

    op.drop_table("journal")
