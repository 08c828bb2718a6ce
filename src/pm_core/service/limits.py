"""The service limits (service.md 13) the application service needs, in its own units."""

from __future__ import annotations

from typing import Literal

import attrs


@attrs.frozen
class ServiceLimits:
    """Timeouts, sizes and retry budgets of signal processing; tests use short values."""

    instance_id: str = "pm-local"
    signal_lock_ttl_ms: int = 30_000
    lock_wait_ms: int = 250
    lock_poll_ms: int = 25
    market_data_timeout_ms: int = 500
    l1_size: int = 10_000
    signal_workers: int = 16
    signal_queue: int = 64
    response_deadline_ms: int = 2_500
    signal_order_style: Literal["market", "ladder"] = "market"
    max_resume_age_s: float = 60.0
    max_queue_age_s: float = 60.0
    exit_leg_attempts: int = 3
    exit_leg_window_s: float = 60.0
    send_deadline_ms: int = 2_000
    rate_retry_ms: int = 100  # pause before an order asks again for a refused rate token
    fill_poll_first_ms: int = 250
    fill_poll_max_ms: int = 1_000
    fill_timeout_s: float = 10.0
    not_found_after_s: float = 30.0
    lookup_spacing_s: float = 5.0
    match_window_s: float = 10.0
    tx_attempts: int = 4
    tx_backoff_base_ms: int = 25
    tx_backoff_cap_ms: int = 500
    tx_budget_request_ms: int = 2_000
    tx_budget_background_ms: int = 30_000
    held_result_retry_ms: int = 1_000
    held_result_max_s: float = 300.0
    recovery_broker_budget_s: float = 10.0
    expected_broker_mode: str | None = None
    broker_mode_check_s: float = 30.0
