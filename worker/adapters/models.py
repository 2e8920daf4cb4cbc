"""The database tables: idempotency (threads, calls, legs), the event journal and the request log.

Uniqueness is the database's job: a thread, a call and a call's leg each have a primary key, so a
second insert of the same thing is a conflict, never a second row. Created by Alembic migrations
(worker/migrations); this module is the single description of the schema that they follow.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ThreadRow(Base):
    """A conversation thread: its top-level Oracle interaction and the lease that serialises it."""

    __tablename__ = "threads"

    thread_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    top_level_interaction_id: Mapped[int | None] = mapped_column(BigInteger)
    top_level_call_id: Mapped[str | None] = mapped_column(String(255))
    # Bumped by every accepted event; a lease is released only if it has not moved meanwhile.
    version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class CallRow(Base):
    """One Genesys call (interaction_id): its furthest status and overall sync state."""

    __tablename__ = "calls"

    interaction_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    thread_key: Mapped[str] = mapped_column(
        ForeignKey("threads.thread_key"), index=True, nullable=False
    )
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    sync_state: Mapped[str] = mapped_column(String(20), index=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class LegRow(Base):
    """One recovery point of a call: an Oracle or Caliq record and how far it got."""

    __tablename__ = "call_legs"

    interaction_id: Mapped[str] = mapped_column(
        ForeignKey("calls.interaction_id"), primary_key=True
    )
    leg: Mapped[str] = mapped_column(String(30), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    remote_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(20))
    request_id: Mapped[str | None] = mapped_column(String(255))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class JournalRow(Base):
    """Every event received, as received: nothing is lost and every failure can be replayed."""

    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    task_id: Mapped[str | None] = mapped_column(String(255))
    interaction_id: Mapped[str | None] = mapped_column(String(255))
    thread_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[int | None] = mapped_column(Integer)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_journal_interaction_id_fingerprint", "interaction_id", "fingerprint"),
        Index("ix_journal_outcome_received_at", "outcome", "received_at"),
    )


class DeliveryRow(Base):
    """Deliveries of one message that started and have not finished: a poison-message counter.

    Keyed on what the message is about (the Genesys event, or the thread), never on the Celery
    task id, which a requeue may change. A worker that dies mid-task leaves its count behind.
    """

    __tablename__ = "deliveries"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    in_flight: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class RequestRow(Base):
    """Every request made to a CRM for a call: the call's timeline and the metrics' source."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    interaction_id: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    leg: Mapped[str] = mapped_column(String(30), nullable=False)
    crm: Mapped[str] = mapped_column(String(10), nullable=False)
    method: Mapped[str] = mapped_column(String(10), nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(nullable=False)
    error: Mapped[str | None] = mapped_column(Text)


# The same tables for Core statements: the hot path's (worker.adapters.repository and
# worker.adapters.pg_step) are built on these, not on the ORM classes.
threads_t: Table = ThreadRow.__table__  # type: ignore[assignment]
calls_t: Table = CallRow.__table__  # type: ignore[assignment]
legs_t: Table = LegRow.__table__  # type: ignore[assignment]
journal_t: Table = JournalRow.__table__  # type: ignore[assignment]
deliveries_t: Table = DeliveryRow.__table__  # type: ignore[assignment]
requests_t: Table = RequestRow.__table__  # type: ignore[assignment]

__all__ = ["Base", "CallRow", "JournalRow", "LegRow", "RequestRow", "ThreadRow", "calls_t",
           "deliveries_t", "journal_t", "legs_t", "requests_t", "threads_t"]
