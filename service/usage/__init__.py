"""What SDKs report using (`POST /api/v1/metrics/bulk`), summed per account,
day, metric and subject (the flag, config or logger a metric names), and
read back through /v1 (`GET /v1/usage`)."""
