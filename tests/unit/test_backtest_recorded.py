"""RecordedSignals.near, which the backtest calls once per signal, against a brute-force scan."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pm_core.model import RecordedSignal, RecordedSignals

KEYS = (("GOLD_MINI", "EXIT", "Long_1"), ("GOLD_MINI", "EXIT", "Long_2"))


def _ref(n: int, key: tuple[str, str, str], instant: int) -> RecordedSignal:
    return RecordedSignal(f"fp{n}", key[0], key[1], key[2], instant, "executed")


def _brute(
    refs: list[RecordedSignal], key: tuple[str, str, str], at: int, window: int
) -> RecordedSignal | None:
    found = None
    for ref in refs:  # the most recently recorded match wins
        if (ref.instrument, ref.type, ref.label) == key and abs(ref.instant_us - at) <= window:
            found = ref
    return found


@given(
    st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 1_000)), max_size=40),
    st.integers(-50, 1_050),
    st.integers(0, 100),
    st.integers(0, 40),
)
def test_near_matches_a_scan_for_every_view(
    entries: list[tuple[tuple[str, str, str], int]], at: int, window: int, cut: int
) -> None:
    refs = [_ref(n, key, instant) for n, (key, instant) in enumerate(entries)]
    views = [RecordedSignals()]
    for ref in refs:
        views.append(views[-1].with_signal(ref))
    for size, view in enumerate(views):
        for key in KEYS:
            assert view.near(*key, at, window) == _brute(refs[:size], key, at, window)
    # extending an older view forks it and never shows the newer entries
    older = views[min(cut, len(views) - 1)]
    extra = _ref(999, KEYS[0], at)
    forked = older.with_signal(extra)
    size = min(cut, len(refs))
    assert forked.near(*KEYS[0], at, window) == extra
    assert older.near(*KEYS[1], at, window) == _brute(refs[:size], KEYS[1], at, window)
    assert RecordedSignals(refs).near(*KEYS[1], at, window) == _brute(refs, KEYS[1], at, window)
