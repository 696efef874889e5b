"""The notes app's schema: one table, and the bootstrap's audit trail."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Identity, MetaData, Table, Text

from service.migrations import define_audit_table

metadata = MetaData()

notes = Table(
    "notes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("body", Text, nullable=False),
)
define_audit_table(metadata)
