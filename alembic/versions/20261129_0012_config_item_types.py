"""configs: item definitions (type, description) beside the raw values, managed (expand)

The smplkit SDK's dialect (/api/v1) types every item: STRING, NUMBER, BOOLEAN
or JSON, with an optional description. The raw values stay in `items`, so /v1
keeps its shapes and its GIN containment filter; `item_definitions` holds
`{item_key: {"type": ..., "description": ...}}` beside them. `managed` tells a
config someone created (true) from one only discovered by an SDK (false).

Expand-only, so the previous release runs on this schema during a rolling
deploy: `item_definitions` is nullable without a default, and `managed` has a
constant default (both catalog-only: no rewrite, a brief lock). The previous
release never writes either; configs it creates are managed, and the service
infers the type of any item its definitions lack, by the rule of the backfill.

The backfill infers the types of existing items from their JSON values
(string: STRING, number: NUMBER, boolean: BOOLEAN, anything else: JSON), in
batches of BATCH_SIZE configs, each its own transaction (an autocommit block);
a migrator killed half-way resumes after the committed batches, since only
configs still without definitions are touched.

Revision ID: 0012_config_item_types
Revises: 0011_key_caps_backfill
Create Date: 2026-11-29 14:00:00+00:00

"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import context, op

revision: str = "0012_config_item_types"
down_revision: str | Sequence[str] | None = "0011_key_caps_backfill"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "5000"))
FIRST_ID = "00000000-0000-0000-0000-000000000000"

# One batch: the next BATCH_SIZE configs after the last one, typed where not yet.
TYPE_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT id FROM configs WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
    ), typed AS (
        UPDATE configs AS c
           SET item_definitions = COALESCE(
                   (SELECT jsonb_object_agg(
                               item.key,
                               jsonb_build_object(
                                   'type',
                                   CASE jsonb_typeof(item.value)
                                       WHEN 'string' THEN 'STRING'
                                       WHEN 'number' THEN 'NUMBER'
                                       WHEN 'boolean' THEN 'BOOLEAN'
                                       ELSE 'JSON'
                                   END))
                      FROM jsonb_each(c.items) AS item),
                   '{}'::jsonb)
          FROM batch
         WHERE c.id = batch.id AND c.item_definitions IS NULL
        RETURNING c.id
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
           (SELECT count(*) FROM typed) AS typed
    """
)


def upgrade() -> None:
    # The autocommit block below commits these columns before the revision is
    # stamped: a migrator that dies after that commit leaves them in place, and
    # the next one runs this revision again over them (IF NOT EXISTS).
    op.add_column(
        "configs",
        sa.Column("item_definitions", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        if_not_exists=True,
    )
    op.add_column(
        "configs",
        sa.Column("managed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        if_not_exists=True,
    )
    with op.get_context().autocommit_block():
        _type_existing_items()


def _type_existing_items() -> None:
    batch = TYPE_BATCH.bindparams(size=BATCH_SIZE)
    if context.is_offline_mode():
        # Offline there are no rows to read: render the batch statement once.
        op.execute(batch.bindparams(after=FIRST_ID))
        return
    connection = op.get_bind()
    after = FIRST_ID
    while (last_id := connection.execute(batch, {"after": after}).one()[0]) is not None:
        after = str(last_id)


def downgrade() -> None:
    op.drop_column("configs", "managed")
    op.drop_column("configs", "item_definitions")
