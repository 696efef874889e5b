"""Usage counts: SDK metrics summed per account, UTC day, metric name and
subject. Bounded: a report holds at most MAX_REPORTED metrics, and an
account keeps at most MAX_ROWS_PER_DAY (metric, subject) pairs a day; past
that, new subjects are summed under OTHER, so a client inventing names
cannot grow the table without end."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import RowMapping, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.models import UsageCount, table

usage = table(UsageCount)
MAX_REPORTED = 1000
MAX_ROWS_PER_DAY = 10_000
OTHER = "(other)"
# A total saturates here rather than overflow the bigint.
MAX_TOTAL = 2**62
# The dimensions that name what a metric counts, as the SDK sends them.
SUBJECT_DIMENSIONS = ("flag", "config", "logger")


@dataclass(frozen=True)
class Reported:
    metric: str
    value: int
    dimensions: Mapping[str, str]

    @property
    def subject(self) -> str:
        return next(
            (self.dimensions[name] for name in SUBJECT_DIMENSIONS if name in self.dimensions), ""
        )


async def record(
    connection: AsyncConnection, account_id: uuid.UUID, reported: Sequence[Reported]
) -> int:
    """Add the reported values to today's counts; returns how many were counted."""
    day = datetime.now(UTC).date()
    totals: dict[tuple[str, str], int] = {}
    for metric in reported:
        pair = (metric.metric, metric.subject)
        totals[pair] = min(totals.get(pair, 0) + metric.value, MAX_TOTAL)
    if not totals:
        return 0
    totals = await _within_bound(connection, account_id, day, totals)
    statement = insert(usage).values(
        [
            {"account_id": account_id, "day": day, "metric": m, "subject": s, "total": total}
            for (m, s), total in sorted(totals.items())
        ]
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["account_id", "day", "metric", "subject"],
            set_={"total": func.least(usage.c.total + statement.excluded.total, MAX_TOTAL)},
        )
    )
    return len(reported)


async def _within_bound(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    day: date,
    totals: dict[tuple[str, str], int],
) -> dict[tuple[str, str], int]:
    """The totals with subjects beyond the day's bound summed under OTHER."""
    today = (usage.c.account_id == account_id) & (usage.c.day == day)
    stored = await connection.scalar(select(func.count()).select_from(usage).where(today)) or 0
    stored_pairs = await connection.execute(
        select(usage.c.metric, usage.c.subject).where(
            today, tuple_(usage.c.metric, usage.c.subject).in_(list(totals))
        )
    )
    known = {(metric, subject) for metric, subject in stored_pairs}
    room = MAX_ROWS_PER_DAY - stored
    bounded: dict[tuple[str, str], int] = {}
    for (metric, subject), total in sorted(totals.items()):
        pair = (metric, subject)
        if pair not in known:
            if room > 1:
                room -= 1
            else:
                pair = (metric, OTHER)
        bounded[pair] = min(bounded.get(pair, 0) + total, MAX_TOTAL)
    return bounded


async def daily(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    since: date | None,
    metric: str | None,
    subject: str | None,
    limit: int,
    offset: int,
) -> Sequence[RowMapping]:
    query = select(usage).where(usage.c.account_id == account_id)
    if since is not None:
        query = query.where(usage.c.day >= since)
    if metric is not None:
        query = query.where(usage.c.metric == metric)
    if subject is not None:
        query = query.where(usage.c.subject == subject)
    query = query.order_by(
        usage.c.day.desc(), usage.c.metric.collate("C"), usage.c.subject.collate("C")
    )
    found: Sequence[RowMapping] = (
        (await connection.execute(query.limit(limit).offset(offset))).mappings().all()
    )
    return found
