"""Duplicate rules: exact fingerprint, then the near window (domain 3.5, 13.2)."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core.config import default_config
from pm_core.model import RecordedSignal, RecordedSignals, Signal, instant_us
from pm_core.signal import find_duplicate, fingerprint, parse_signal, recorded_from
from tests.strategies import aware_instants

CONFIG = default_config()
WINDOW = CONFIG.portfolio.near_duplicate_window_s  # 60 s
T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)


def signal_at(
    ts: dt.datetime | str,
    *,
    type_: str = "BASE_ENTRY",
    instrument: str = "BANK_NIFTY",
    position: str = "Long_1",
) -> Signal:
    payload = {
        "type": type_,
        "instrument": instrument,
        "position": position,
        "price": 52000,
        "stop": 51650,
        "lots": 1,
        "atr": 350,
        "er": 0.8,
        "supertrend": 51650,
        "timestamp": ts if isinstance(ts, str) else ts.isoformat(),
        "reason": "r",
    }
    return parse_signal(payload, CONFIG)


def check(
    recorded: RecordedSignals, signal: Signal, window_s: float = WINDOW
) -> tuple[str, RecordedSignal] | None:
    return find_duplicate(recorded, signal, fingerprint(signal), window_s)


def fold(offsets_s: list[float], window_s: float = WINDOW) -> list[bool]:
    """Feed signals of one key in order; record the non-duplicates; report which were duplicates."""
    recorded = RecordedSignals()
    seen: list[bool] = []
    for offset in offsets_s:
        signal = signal_at(T0 + dt.timedelta(seconds=offset))
        duplicate = check(recorded, signal, window_s)
        seen.append(duplicate is not None)
        if duplicate is None:
            recorded = recorded.with_signal(recorded_from(signal, fingerprint(signal), "executed"))
    return seen


def test_window_vector_checks_every_recorded_signal_of_the_key() -> None:
    assert fold([0, 40, 70, 100, 131, -10]) == [False, True, False, True, False, True]


@pytest.mark.parametrize(
    ("offset", "duplicate"), [(60, True), (61, False), (-60, True), (-61, False)]
)
def test_window_is_inclusive(offset: float, duplicate: bool) -> None:
    assert fold([0, offset]) == [False, duplicate]


def test_window_uses_full_precision_not_fingerprint_seconds() -> None:
    assert fold([0, 60.0]) == [False, True]
    assert fold([0, 60.5]) == [False, False]
    assert fold([0.5, 60.5]) == [False, True]
    assert fold([0.5, 60.500001]) == [False, False]


def test_window_zero_disables_near_check() -> None:
    assert fold([0, 1, 40], window_s=0) == [False, False, False]


def test_window_zero_still_catches_exact_duplicates() -> None:
    assert fold([0, 0.9], window_s=0) == [False, True]


def test_near_duplicate_code_and_original() -> None:
    first = signal_at(T0)
    record = recorded_from(first, fingerprint(first), "blocked", signal_id=7)
    found = check(RecordedSignals([record]), signal_at(T0 + dt.timedelta(seconds=40)))
    assert found == ("duplicate_near_window", record)


@pytest.mark.parametrize(
    "other",
    [
        {"instrument": "GOLD_MINI"},
        {"type_": "PYRAMID"},
        {"position": "Long_2"},
    ],
)
def test_other_key_is_not_a_duplicate(other: dict[str, str]) -> None:
    first = signal_at(T0)
    recorded = RecordedSignals([recorded_from(first, fingerprint(first), "executed")])
    assert check(recorded, signal_at(T0 + dt.timedelta(seconds=10), **other)) is None
    assert check(recorded, signal_at(T0, **other)) is None


def test_same_instant_in_other_zone_is_an_exact_duplicate() -> None:
    first = signal_at("2025-11-28T16:00:00+05:30")
    assert check(RecordedSignals(), first) is None
    record = recorded_from(first, fingerprint(first), "executed")
    found = check(RecordedSignals([record]), signal_at("2025-11-28T10:30:00Z"))
    assert found == ("duplicate_fingerprint", record)


def test_naive_and_aware_inputs_compare_after_normalising() -> None:
    first = signal_at("2025-11-28T16:00:00")  # naive = Asia/Kolkata
    record = recorded_from(first, fingerprint(first), "executed")
    found = check(RecordedSignals([record]), signal_at("2025-11-28T10:30:30Z"))
    assert found == ("duplicate_near_window", record)


def test_exact_check_runs_first() -> None:
    first = signal_at(T0)
    near = signal_at(T0 + dt.timedelta(seconds=0.3))
    recorded = RecordedSignals(
        [
            recorded_from(near, "not-its-fingerprint", "executed", signal_id=1),
            recorded_from(first, fingerprint(first), "rejected", signal_id=2),
        ]
    )
    code, original = check(recorded, near) or ("", None)
    assert code == "duplicate_fingerprint"
    assert original is not None and original.signal_id == 2


def test_duplicates_are_found_in_any_recorded_order() -> None:
    # The newest recorded signal is outside the window; an older one is inside it.
    older, newer = signal_at(T0), signal_at(T0 + dt.timedelta(seconds=200))
    recorded = RecordedSignals(
        [recorded_from(s, fingerprint(s), "executed") for s in (older, newer)]
    )
    found = check(recorded, signal_at(T0 - dt.timedelta(seconds=50)))
    assert found is not None and found[1].instant_us == instant_us(T0)


def test_recorded_from_keeps_what_duplicate_checks_need() -> None:
    signal = signal_at("2025-11-28T16:00:00.123456+05:30", type_="EXIT", position="ALL")
    record = recorded_from(signal, fingerprint(signal), "partially_executed", signal_id=42)
    assert attrs.asdict(record) == {
        "fingerprint": fingerprint(signal),
        "instrument": "BANK_NIFTY",
        "type": "EXIT",
        "label": "ALL",
        "instant_us": instant_us(T0) + 123456,
        "outcome": "partially_executed",
        "signal_id": 42,
        "timestamp": signal.timestamp,
    }
    assert recorded_from(signal, "f", "executed").signal_id is None


@given(
    instant=aware_instants(),
    offset_us=st.integers(-200_000_000, 200_000_000),
    window_s=st.sampled_from([0.0, 1.0, 30.0, 60.0, 90.5]),
)
def test_near_window_matches_distance_property(
    instant: dt.datetime, offset_us: int, window_s: float
) -> None:
    first = signal_at(instant)
    second = signal_at(instant + dt.timedelta(microseconds=offset_us))
    recorded = RecordedSignals([recorded_from(first, fingerprint(first), "executed")])
    found = check(recorded, second, window_s)
    if fingerprint(first) == fingerprint(second):
        assert found is not None and found[0] == "duplicate_fingerprint"
    elif window_s > 0 and abs(offset_us) <= window_s * 1_000_000:
        assert found is not None and found[0] == "duplicate_near_window"
    else:
        assert found is None
