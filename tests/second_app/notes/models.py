"""The notes app's schema: one table, and the bootstrap's audit trail."""

from __future__ import annotations

from alembic_lockstep import define_audit_table
from sqlalchemy import BigInteger, Column, Identity, MetaData, Table, Text

metadata = MetaData()

notes = Table(
    "notes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("body", Text, nullable=False),
)
define_audit_table(metadata)
