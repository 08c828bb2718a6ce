"""Client order ids, leg planning, intent states and unknown-order matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core import orders

FP = "fb6ca43d510c08d5" + "0" * 48


def test_client_order_id_format() -> None:
    assert orders.client_order_id(FP, 1, "CE", 1) == "pm-fb6ca43d510c08d5-1-CE-1"
    assert orders.client_order_id(FP.upper(), 0, "FUT", 2) == "pm-fb6ca43d510c08d5-0-FUT-2"
    assert orders.client_order_id("r12.3", 4, "PE", 1) == "pm-r12.3-4-PE-1"
    assert orders.client_order_id("m77", 0, "FUT", 1) == "pm-m77-0-FUT-1"
    parent = orders.client_order_id(FP, 6, "PE", 3)
    assert orders.child_order_id(parent, 2) == "pm-fb6ca43d510c08d5-6-PE-3.2"


@pytest.mark.parametrize(
    ("part", "label", "leg", "attempt"),
    [
        ("xyz", 1, "CE", 1),
        ("fb6ca43d", 1, "CE", 1),
        ("g" * 64, 1, "CE", 1),
        (FP, 1, "XX", 1),
        (FP, -1, "CE", 1),
        (FP, 1, "CE", 0),
        ("r" + "9" * 30 + ".1", 1, "CE", 1),
    ],
)
def test_client_order_id_rejects_bad_input(part: str, label: int, leg: str, attempt: int) -> None:
    with pytest.raises(ValueError):
        orders.client_order_id(part, label, leg, attempt)


hex_fingerprints = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
id_keys = st.tuples(
    st.integers(min_value=0, max_value=99),
    st.sampled_from(["CE", "PE", "FUT"]),
    st.integers(min_value=1, max_value=999),
    st.integers(min_value=0, max_value=99),  # 0 = no freeze child
)


@given(hex_fingerprints, st.lists(id_keys, min_size=1, max_size=30, unique=True))
def test_client_ids_short_and_unique(fp: str, keys: list[tuple[int, str, int, int]]) -> None:
    ids = set()
    for label, leg, attempt, child in keys:
        cid = orders.client_order_id(fp, label, leg, attempt)
        if child:
            cid = orders.child_order_id(cid, child)
        assert len(cid) <= 40
        assert cid.startswith("pm-" + fp[:16] + "-")
        ids.add(cid)
    assert len(ids) == len(keys)
