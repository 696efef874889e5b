"""The migration bootstrap: every replica migrates on startup, exactly once
across a fleet, under a PostgreSQL session advisory lock; readiness reports
what it is doing."""
