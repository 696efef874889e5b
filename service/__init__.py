"""Platform service: an async FastAPI backend that migrates its PostgreSQL schema
safely on startup, for a fleet of replicas."""

__version__ = "0.1.0"
