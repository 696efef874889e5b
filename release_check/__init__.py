"""The previous release on the new schema: `python -m release_check` (docs/development/migrations.md,
"Adding a migration"). During a rolling deploy the release before runs on the
schema the new revisions made; this check starts that release's server on such
a database and walks its whole API."""
