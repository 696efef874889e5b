"""A second, minimal FastAPI app on the migration bootstrap package alone: its
own models, its own Alembic directory, its own configuration. It imports
nothing of the service but `service.migrations` (tests/migrations/test_second_app.py
checks that, and runs a fleet of it)."""
