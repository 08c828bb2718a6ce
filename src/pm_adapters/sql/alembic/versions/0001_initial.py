"""Initial schema: every service.md 14 table, constraint and index; the leader fence row.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pm_adapters.sql.tables import leader_fence, metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in metadata.sorted_tables:
        op.execute(sa.schema.CreateTable(table))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            op.execute(sa.schema.CreateIndex(index))
    op.execute(leader_fence.insert().values(id=1, epoch=0))


def downgrade() -> None:
    raise NotImplementedError("pm migrations are forward-only")
