"""The versioned REST API (JSON:API 1.1), served under /v1 once the schema is ready."""

from service.api import accounts, api_keys, configs, environments, flags, meta, usage, users

# A request is matched against the routes in this order: the configs, which
# the SDKs and most clients read, come first (matching cost a tenth of a
# point read's CPU when they came last: docs/benchmarks/api.notes.md).
ROUTERS = (
    configs.router,
    flags.router,
    meta.router,
    accounts.router,
    users.router,
    environments.router,
    api_keys.router,
    usage.router,
)
