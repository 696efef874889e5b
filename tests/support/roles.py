"""Two real database roles, the way docs/operations/database-roles.md sets them up:
an owner that runs the migrations, an application role that only reads and
writes rows. Role names are unique per test; roles are dropped afterwards."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import URL

from tests.support.postgres import connect, drop_database
from tests.support.secrets import PASSWORDS

# The operator's grants of docs/operations/database-roles.md, for a
# database owned by the owner role.
DEFAULT_PRIVILEGES = """
GRANT USAGE ON SCHEMA public TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO {app};
"""
GRANTS_ON_EXISTING_TABLES = """
GRANT USAGE ON SCHEMA public TO {app};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app};
"""
# Who ran each DDL command (a superuser's trigger, so the owner needs no rights on it).
DDL_BY_ROLE = """
CREATE SCHEMA ddl_roles;
CREATE TABLE ddl_roles.commands (role text, tag text, object text);
CREATE FUNCTION ddl_roles.record() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE command record;
BEGIN
    FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO ddl_roles.commands VALUES (session_user, command.command_tag, command.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER ddl_roles ON ddl_command_end EXECUTE FUNCTION ddl_roles.record();
"""


@dataclass
class Roles:
    admin: URL
    owner: str
    app: str
    passwords: dict[str, str]
    databases: list[str] = field(default_factory=list)

    def url(self, role: str, database: str) -> URL:
        return self.admin.set(username=role, password=self.passwords[role], database=database)

    async def database(self, grants: str | None = DEFAULT_PRIVILEGES) -> str:
        """A new database owned by the owner role, with `grants` made by the operator."""
        name = f"test_roles_{uuid.uuid4().hex[:10]}"
        await self.execute(self.admin, f"CREATE DATABASE {name} OWNER {self.owner}")
        self.databases.append(name)
        await self.execute(self.admin.set(database=name), DDL_BY_ROLE)
        if grants:
            await self.grant(name, grants)
        return name

    async def grant(self, database: str, grants: str) -> None:
        statements = grants.format(owner=self.owner, app=self.app)
        await self.execute(self.admin.set(database=database), statements)

    @staticmethod
    async def execute(url: URL, statements: str) -> None:
        connection = await connect(url)
        try:
            await connection.execute(statements)
        finally:
            await connection.close()


@asynccontextmanager
async def owner_and_app_roles(admin: URL) -> AsyncIterator[Roles]:
    suffix = uuid.uuid4().hex[:10]
    owner, app = f"test_owner_{suffix}", f"test_app_{suffix}"
    passwords = {owner: secrets.token_hex(16), app: secrets.token_hex(16)}
    PASSWORDS.extend(passwords.values())
    roles = Roles(admin, owner, app, passwords)
    await roles.execute(
        admin,
        f"CREATE ROLE {owner} LOGIN PASSWORD '{passwords[owner]}';"
        f"CREATE ROLE {app} LOGIN PASSWORD '{passwords[app]}'",
    )
    try:
        yield roles
    finally:
        for name in roles.databases:
            await drop_database(admin, name)
        await roles.execute(admin, f"DROP ROLE IF EXISTS {app}; DROP ROLE IF EXISTS {owner}")
