"""A second, minimal FastAPI app on the migration bootstrap library alone
(alembic-lockstep): its own models, its own Alembic directory, its own
configuration. It imports nothing of the service, and of the library only the
names it declares public (tests/migrations/test_second_app.py checks that, and
runs a fleet of it, also from the library's wheel in a clean environment)."""
