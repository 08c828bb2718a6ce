"""SQLAlchemy Core MetaData for every table of service.md section 14.

Table and column names are the spec's; ``portfolio_positions`` holds the domain 7.7 record
under the names of ``pm_core.model.Position`` plus the service's extras. Alembic revisions
are written against this metadata (``alembic/versions``); a test checks they never drift.
"""

from __future__ import annotations

import sqlalchemy as sa

from pm_adapters.sql.types import BigId, Json, Money, Price, UtcDateTime
from pm_core.ports import INTENT_STATES, SIGNAL_STATES, STATISTIC_NAMES

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

POSITION_STATUSES = ("pending_open", "open", "partial", "closing", "closed", "failed")
LIVE_POSITION_STATUSES = ("pending_open", "open", "partial", "closing")
ROLLOVER_STATUSES = ("none", "in_progress", "rolled", "failed", "abandoned")
INTENT_ORIGINS = ("signal", "rollover", "unwind", "manual")
NON_TERMINAL_INTENT_STATES = (
    "pending",
    "sending",
    "accepted",
    "partially_filled",
    "unknown",
    "ambiguous",
)
INSTANCE_STATUSES = ("starting", "active", "draining", "stopped", "crashed")
RELEASE_REASONS = ("resigned", "lease_lost", "fenced", "redis_lost", "crashed_detected")
LEDGER_KINDS = ("deposit", "withdraw", "trading_pnl", "rollover_pnl", "adjustment")
BLOCK_REASONS = ("reconciliation", "ambiguous_order", "unwind_failed", "manual")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, sa.Identity(), primary_key=True)


def _now() -> sa.sql.functions.now:
    return sa.func.now()


portfolio_state = sa.Table(
    "portfolio_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("initial_capital", Money, nullable=False),
    sa.Column("closed_equity", Money, nullable=False),
    sa.Column("equity_high", Money, nullable=False),
    sa.Column("total_risk_amount", Money),
    sa.Column("total_vol_amount", Money),
    sa.Column("margin_used", Money),
    sa.Column("reserved_risk_amount", Money),
    sa.Column("reserved_margin", Money),
    sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.Column("updated_at", UtcDateTime, server_default=_now()),
    sa.CheckConstraint("id = 1", name="single_row"),
)

signal_log = sa.Table(
    "signal_log",
    metadata,
    _id(),
    sa.Column("fingerprint", sa.CHAR(64), nullable=False, unique=True),
    sa.Column("instrument", sa.String(64), nullable=False),
    sa.Column("signal_type", sa.String(16), nullable=False),
    sa.Column("position_label", sa.String(32), nullable=False),
    sa.Column("signal_ts", UtcDateTime, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("source", sa.String(64)),
    sa.Column("payload", Json),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reason_codes", Json),
    sa.Column("duplicate_layer", sa.String(16)),
    sa.Column(
        "duplicate_of_id",
        BigId,
        sa.ForeignKey("signal_log.id", ondelete="SET NULL"),
    ),
    sa.Column("duplicate_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("last_duplicate_at", UtcDateTime),
    sa.Column("outcome", Json),
    sa.Column("http_status", sa.Integer),
    # The response body a replay returns (decision record plus the signal's intents).
    sa.Column("response", Json),
    sa.Column("attention_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("owner_instance_id", sa.String(128)),
    sa.Column("claim_epoch", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.Column("redis_token", sa.BigInteger),
    sa.Column("completed_at", UtcDateTime),
    sa.CheckConstraint(_in("status", SIGNAL_STATES), name="status"),
    sa.Index("ix_signal_log_received_at", "received_at"),
    sa.Index(
        "ix_signal_log_near",
        "instrument",
        "signal_type",
        "position_label",
        "signal_ts",
    ),
    sa.Index("ix_signal_log_instrument_signal_ts", "instrument", "signal_ts"),
    sa.Index(
        "ix_signal_log_in_flight",
        "instrument",
        "received_at",
        postgresql_where=sa.text("status IN ('queued', 'processing')"),
        sqlite_where=sa.text("status IN ('queued', 'processing')"),
    ),
)

_LIVE = _in("status", LIVE_POSITION_STATUSES)

portfolio_positions = sa.Table(
    "portfolio_positions",
    metadata,
    _id(),
    sa.Column("instrument", sa.String(64), nullable=False),
    sa.Column("label", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("is_base_position", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lots", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("lot_size", sa.Integer, nullable=False),
    sa.Column("point_value", Money, nullable=False),
    sa.Column("contract_month", sa.String(7)),
    sa.Column("expiry", sa.Date),
    sa.Column("strike", Money),
    sa.Column("ce_symbol", sa.String(64)),
    sa.Column("pe_symbol", sa.String(64)),
    sa.Column("futures_symbol", sa.String(64)),
    sa.Column("ce_entry_price", Money),
    sa.Column("pe_entry_price", Money),
    sa.Column("entry_fill_price", Money),
    sa.Column("entry_timestamp", UtcDateTime, nullable=False),
    sa.Column("entry_price", Money, nullable=False),
    sa.Column("initial_stop", Money, nullable=False),
    sa.Column("current_stop", Money, nullable=False),
    sa.Column("highest_close", Money, nullable=False),
    sa.Column("atr", Money, nullable=False),
    sa.Column("limiter", sa.String(32)),
    sa.Column("basis", Money, nullable=False),
    sa.Column("unrealized_pnl", Money, nullable=False, server_default=sa.text("0")),
    sa.Column("realized_pnl", Money, nullable=False, server_default=sa.text("0")),
    sa.Column("exit_timestamp", UtcDateTime),
    sa.Column("exit_price", Money),
    sa.Column("exit_reason", sa.String(64)),
    sa.Column("rollover_realized_pnl", Money, nullable=False, server_default=sa.text("0")),
    sa.Column("rollover_spread_total", Money, nullable=False, server_default=sa.text("0")),
    sa.Column("rollover_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("rollover_status", sa.String(16), nullable=False, server_default="none"),
    sa.Column("rollover_step", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("rollover_target_expiry", sa.Date),
    sa.Column("rollover_target_strike", Money),
    sa.Column("original_expiry", sa.Date),
    sa.Column("original_strike", Money),
    sa.Column("anchor_base_id", BigId, sa.ForeignKey("portfolio_positions.id")),
    sa.Column("opened_by_fingerprint", sa.CHAR(64)),
    sa.Column(
        "opened_by_signal_id",
        BigId,
        sa.ForeignKey("signal_log.id", ondelete="SET NULL"),
    ),
    sa.Column(
        "closed_by_signal_id",
        BigId,
        sa.ForeignKey("signal_log.id", ondelete="SET NULL"),
    ),
    sa.Column("pending_exit", Json),
    sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint(_in("status", POSITION_STATUSES), name="status"),
    sa.CheckConstraint(_in("rollover_status", ROLLOVER_STATUSES), name="rollover_status"),
    sa.CheckConstraint("lots > 0 OR status = 'failed'", name="lots_positive"),
    sa.Index(
        "uq_portfolio_positions_live_label",
        "instrument",
        "label",
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    ),
    sa.Index("ix_portfolio_positions_instrument_status", "instrument", "status"),
    sa.Index("ix_portfolio_positions_status", "status"),
    sa.Index("ix_portfolio_positions_created_at", "created_at"),
    sa.Index("ix_portfolio_positions_instrument_entry", "instrument", "entry_timestamp"),
    sa.Index("ix_portfolio_positions_rollover", "rollover_status", "expiry"),
)

pyramiding_state = sa.Table(
    "pyramiding_state",
    metadata,
    sa.Column("instrument", sa.String(64), primary_key=True),
    sa.Column(
        "base_position_id",
        BigId,
        sa.ForeignKey("portfolio_positions.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("last_pyramid_price", Money),
    sa.Column("mark_price", Money),
    sa.Column("mark_atr", Money),
    sa.Column("mark_ts", UtcDateTime),
    sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.Column("updated_at", UtcDateTime, server_default=_now()),
)

order_intents = sa.Table(
    "order_intents",
    metadata,
    _id(),
    sa.Column("client_order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column(
        "signal_id",
        BigId,
        sa.ForeignKey("signal_log.id", ondelete="CASCADE"),
    ),
    sa.Column("position_id", BigId, sa.ForeignKey("portfolio_positions.id")),
    sa.Column("instrument", sa.String(64), nullable=False, server_default=""),
    sa.Column("group_id", sa.String(64), nullable=False),
    sa.Column("leg", sa.String(8), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),
    sa.Column("exchange", sa.String(16), nullable=False),
    sa.Column("action", sa.String(4), nullable=False),
    sa.Column("product", sa.String(16), nullable=False),
    sa.Column("pricetype", sa.String(16), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("lots", sa.Integer, nullable=False),
    sa.Column("limit_price", Price),
    sa.Column("ref_price", Money, nullable=False),
    sa.Column("state", sa.String(24), nullable=False, server_default="pending"),
    sa.Column("broker_order_id", sa.String(64)),
    sa.Column("broker_mode", sa.String(16)),
    sa.Column("filled_quantity", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("average_price", Price),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("owner_instance_id", sa.String(128)),
    sa.Column("leader_epoch", sa.BigInteger),
    sa.Column("sent_at", UtcDateTime),
    sa.Column("acked_at", UtcDateTime),
    sa.Column("resolved_at", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint(_in("origin", INTENT_ORIGINS), name="origin"),
    sa.CheckConstraint(_in("action", ("BUY", "SELL")), name="action"),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint(_in("state", INTENT_STATES), name="state"),
    sa.Index(
        "uq_order_intents_broker_order_id",
        "broker_order_id",
        unique=True,
        postgresql_where=sa.text("broker_order_id IS NOT NULL"),
        sqlite_where=sa.text("broker_order_id IS NOT NULL"),
    ),
    sa.Index(
        "ix_order_intents_open",
        "state",
        "sent_at",
        postgresql_where=sa.text(_in("state", NON_TERMINAL_INTENT_STATES)),
        sqlite_where=sa.text(_in("state", NON_TERMINAL_INTENT_STATES)),
    ),
    sa.Index("ix_order_intents_signal_id", "signal_id"),
    sa.Index("ix_order_intents_position_id", "position_id"),
    sa.Index("ix_order_intents_symbol_created", "symbol", "created_at"),
)

instance_metadata = sa.Table(
    "instance_metadata",
    metadata,
    sa.Column("instance_id", sa.String(128), primary_key=True),
    sa.Column("instance_name", sa.String(128)),
    sa.Column("hostname", sa.String(255)),
    sa.Column("port", sa.Integer),
    sa.Column("pid", sa.Integer),
    sa.Column("version", sa.String(32)),
    sa.Column("started_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.Column("last_heartbeat", UtcDateTime, nullable=False, server_default=_now()),
    sa.Column("status", sa.String(16), nullable=False, server_default="starting"),
    sa.Column("is_leader", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("leader_epoch", sa.BigInteger),
    sa.Column("mode", sa.String(16)),
    sa.Column("last_signal_at", UtcDateTime),
    sa.Column("stopped_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, server_default=_now()),
    sa.CheckConstraint(_in("status", INSTANCE_STATUSES), name="status"),
    sa.Index("ix_instance_metadata_status_heartbeat", "status", "last_heartbeat"),
)

leadership_history = sa.Table(
    "leadership_history",
    metadata,
    _id(),
    sa.Column("instance_id", sa.String(128), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False, unique=True),
    sa.Column("mode", sa.String(16)),
    sa.Column("acquired_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.Column("released_at", UtcDateTime),
    sa.Column("duration_ms", sa.BigInteger),
    sa.Column("release_reason", sa.String(24)),
    sa.CheckConstraint(
        f"release_reason IS NULL OR {_in('release_reason', RELEASE_REASONS)}",
        name="release_reason",
    ),
)
sa.Index("ix_leadership_history_acquired_at", leadership_history.c.acquired_at.desc())
sa.Index(
    "ix_leadership_history_instance_acquired",
    leadership_history.c.instance_id,
    leadership_history.c.acquired_at.desc(),
)

leader_fence = sa.Table(
    "leader_fence",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("holder", sa.String(128)),
    sa.Column("acquired_at", UtcDateTime),
    sa.Column("expires_at", UtcDateTime),
    sa.CheckConstraint("id = 1", name="single_row"),
)

trading_statistics = sa.Table(
    "trading_statistics",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", Money, nullable=False, server_default=sa.text("0")),
    sa.Column("updated_at", UtcDateTime, server_default=_now()),
    sa.CheckConstraint(_in("name", STATISTIC_NAMES), name="known_name"),
)

equity_ledger = sa.Table(
    "equity_ledger",
    metadata,
    _id(),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("equity_after", Money, nullable=False),
    sa.Column(
        "position_id",
        BigId,
        sa.ForeignKey("portfolio_positions.id", ondelete="SET NULL"),
    ),
    sa.Column("signal_id", BigId, sa.ForeignKey("signal_log.id", ondelete="SET NULL")),
    sa.Column("note", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
    sa.CheckConstraint("amount <> 0", name="amount_nonzero"),
    sa.Index("ix_equity_ledger_created_at", "created_at"),
)

instrument_blocks = sa.Table(
    "instrument_blocks",
    metadata,
    sa.Column("instrument", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(24), nullable=False),
    sa.Column("detail", Json),
    sa.Column("since", UtcDateTime, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
    sa.CheckConstraint(_in("reason", BLOCK_REASONS), name="reason"),
)

# Trade records of closes (domain 7.5 / 11.4): kept so a settled close can be reported.
position_trades = sa.Table(
    "position_trades",
    metadata,
    _id(),
    sa.Column(
        "position_id",
        BigId,
        sa.ForeignKey("portfolio_positions.id", ondelete="SET NULL"),
    ),
    sa.Column("instrument", sa.String(64), nullable=False),
    sa.Column("label", sa.String(32), nullable=False),
    sa.Column("is_base", sa.Boolean, nullable=False),
    sa.Column("entry_time", UtcDateTime, nullable=False),
    sa.Column("entry_price", Money, nullable=False),
    sa.Column("initial_stop", Money, nullable=False),
    sa.Column("point_value", Money, nullable=False),
    sa.Column("exit_time", UtcDateTime, nullable=False),
    sa.Column("exit_price", Money, nullable=False),
    sa.Column("lots", sa.Integer, nullable=False),
    sa.Column("pnl", Money, nullable=False),
    sa.Column("exit_reason", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    sa.Index("ix_position_trades_exit_time", "exit_time"),
)

# Retention deletes signal_log rows in batches: each foreign key into signal_log needs an index,
# or PostgreSQL scans the referencing table once per deleted row (statement timeout at 50k rows).
sa.Index("ix_signal_log_duplicate_of_id", signal_log.c.duplicate_of_id)
sa.Index("ix_portfolio_positions_opened_by_signal", portfolio_positions.c.opened_by_signal_id)
sa.Index("ix_portfolio_positions_closed_by_signal", portfolio_positions.c.closed_by_signal_id)
sa.Index("ix_equity_ledger_signal_id", equity_ledger.c.signal_id)
