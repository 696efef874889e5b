"""Tests of service/migrations: the bootstrap, its lock, commands and failures."""
