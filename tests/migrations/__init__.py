"""Tests of the migration bootstrap (alembic_lockstep): the bootstrap, its lock, commands and failures."""
