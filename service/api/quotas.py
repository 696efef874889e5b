"""The account quotas (service/quotas.py) as a dependency of the routes that add rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.quotas import AccountQuotas, quotas_of
from service.state import state_of


async def account_quotas(request: Request) -> AccountQuotas:
    return quotas_of(state_of(request)["settings"])


Quotas = Annotated[AccountQuotas, Depends(account_quotas)]
