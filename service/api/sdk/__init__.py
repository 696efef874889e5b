"""The smplkit SDK's dialect of the API, served under /api/v1 beside /v1, over
the same tables, keys, roles and error envelope (docs/sdk.md)."""

from service.api.sdk import account, configs, discovery, environments, events, flags, metrics

# Discovery first: POST /configs/bulk is no config's key.
ROUTERS = (
    discovery.router,
    configs.router,
    events.router,
    environments.router,
    account.router,
    flags.router,
    metrics.router,
)
