"""The database: engines and pools, TLS, the request path's errors and
statement timeout, the connection budget, the embedded PostgreSQL."""
