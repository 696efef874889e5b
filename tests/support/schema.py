"""What a migration decides, read back from the database: compared between a
clean run and a run that was killed and resumed."""

from __future__ import annotations

from sqlalchemy.engine import URL

from tests.support.postgres import connect

TABLES = ("accounts", "users", "environments", "api_keys", "configs", "contexts")


async def snapshot(url: URL) -> dict[str, object]:
    """Schema, indexes, constraints, version, a digest of each table's rows,
    and which revisions the audit trail records (of the tables that exist)."""
    connection = await connect(url)

    async def rows(query: str) -> list[tuple[object, ...]]:
        return [tuple(row) for row in await connection.fetch(query)]

    async def exists(table: str) -> bool:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))

    try:
        found: dict[str, object] = {
            "columns": await rows(
                """SELECT table_name, column_name, data_type, is_nullable, column_default
                     FROM information_schema.columns WHERE table_schema = 'public'
                    ORDER BY 1, 2"""
            ),
            "indexes": await rows(
                """SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1"""
            ),
            "constraints": await rows(
                """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
                     FROM pg_constraint WHERE connamespace = 'public'::regnamespace
                    ORDER BY 1, 2"""
            ),
            "version": await connection.fetchval("SELECT version_num FROM alembic_version"),
        }
        if await exists("schema_migration_audit"):
            found["audit"] = await rows(
                "SELECT revision, direction FROM schema_migration_audit ORDER BY revision, direction"
            )
        for table in TABLES:
            if await exists(table):
                found[table] = await connection.fetchval(
                    f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
                )
        return found
    finally:
        await connection.close()
