"""pm_portfolio_snapshot(take_lock): the portfolio row lock and the snapshot in one round trip.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from pm_adapters.sql.functions import PORTFOLIO_SNAPSHOT

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(PORTFOLIO_SNAPSHOT)


def downgrade() -> None:
    raise NotImplementedError("pm migrations are forward-only")
