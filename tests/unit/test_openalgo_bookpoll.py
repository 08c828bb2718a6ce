"""The shared order-book poll (openalgo.md 6): over three followed orders, one orderbook read
per PM_OPENALGO_BOOK_POLL_MS answers every status; otherwise each order is asked alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from decimal import Decimal

from pm_adapters.openalgo.bookpoll import SharedBookPoll
from pm_core.ports import Ok, OrderStatus, ReadError, ReadResult


def row(order_id: str, status: str = "OPEN") -> OrderStatus:
    return OrderStatus(
        order_id=order_id,
        symbol="GOLDM05JAN26FUT",
        exchange="MCX",
        action="BUY",
        quantity=1,
        price=Decimal(78500),
        pricetype="LIMIT",
        product="NRML",
        status=status,
    )


class Book:
    """An order book the test edits; counts reads."""

    def __init__(self, *ids: str) -> None:
        self.rows = {i: row(i) for i in ids}
        self.reads = 0
        self.fail = False
        self.delay_s = 0.0

    def read(self) -> ReadResult[Sequence[OrderStatus]]:
        self.reads += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            return ReadError("http_503", "orderbook: HTTP 503")
        return Ok(list(self.rows.values()))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def first_questions(poll: SharedBookPoll, *ids: str) -> None:
    """Each order's read right after its placement: always asked alone."""
    for order_id in ids:
        assert poll.status(order_id) is None


def test_three_polled_orders_are_each_asked_alone() -> None:
    book, clock = Book("a", "b", "c"), Clock()
    poll = SharedBookPoll(book.read, 0.5, monotonic=clock)
    first_questions(poll, "a", "b", "c")
    for _ in range(3):
        clock.now += 0.25
        first_questions(poll, "a", "b", "c")
    assert book.reads == 0


def test_orders_asked_once_never_switch_to_the_book() -> None:
    """Market orders complete at once and are asked about once: no book read for them."""
    ids = [f"m{n}" for n in range(20)]
    book, clock = Book(*ids), Clock()
    poll = SharedBookPoll(book.read, 0.5, monotonic=clock)
    first_questions(poll, *ids)
    assert (poll.followed(), book.reads) == (0, 0)


def test_a_fourth_polled_order_switches_to_one_book_read_per_interval() -> None:
    book, clock = Book("a", "b", "c", "d"), Clock()
    poll = SharedBookPoll(book.read, 0.5, monotonic=clock)
    first_questions(poll, "a", "b", "c", "d")
    clock.now += 0.25
    first_questions(poll, "a", "b", "c")  # three polled: still asked alone
    shared = poll.status("d")  # the fourth
    assert shared is not None and shared.order_id == "d"
    assert book.reads == 1
    # Within the interval every polled order is answered from that one read.
    for order_id in ("a", "b", "c", "d"):
        answer = poll.status(order_id)
        assert answer is not None and answer.order_id == order_id
    assert book.reads == 1
    # Past it, the next question reads the book again and sees what changed.
    book.rows["b"] = row("b", "COMPLETE")
    clock.now += 0.5
    answer = poll.status("b")
    assert answer is not None and answer.status == "COMPLETE"
    assert book.reads == 2


def polled(poll: SharedBookPoll, clock: Clock, *ids: str) -> None:
    """Every order asked twice, a poll apart: all of them followed."""
    first_questions(poll, *ids)
    clock.now += 0.25
    for order_id in ids:
        poll.status(order_id)


def test_orders_not_in_the_book_or_just_changed_by_us_are_asked_alone() -> None:
    book, clock = Book("a", "b", "c", "d"), Clock()
    poll = SharedBookPoll(book.read, 0.5, monotonic=clock)
    polled(poll, clock, "a", "b", "c", "d")
    assert poll.status("new") is None  # placed after the read: its first question
    assert poll.status("new") is None  # polled now, but not in the book read before it
    poll.forget("c")  # cancelled by us a moment ago
    assert poll.status("c") is None
    assert poll.status("a") is not None
    book.fail = True
    clock.now += 0.5
    assert poll.status("a") is None  # an unreadable book: ask the order itself


def test_orders_no_longer_asked_about_stop_counting() -> None:
    book, clock = Book("a", "b", "c", "d"), Clock()
    poll = SharedBookPoll(book.read, 0.5, monotonic=clock)
    polled(poll, clock, "a", "b", "c", "d")
    assert poll.followed() == 4
    clock.now += 2.5  # past the window (four intervals, at least 2 s): all filled and done
    assert poll.followed() == 0
    assert poll.status("a") is None
    assert book.reads == 1


def test_concurrent_questions_share_one_read() -> None:
    ids = [f"o{n}" for n in range(8)]
    book = Book(*ids)
    book.delay_s = 0.05
    poll = SharedBookPoll(book.read, 10.0)  # one interval covers the whole test
    first_questions(poll, *ids)
    first_questions(poll, *ids[:3])  # three polled
    answers: dict[str, OrderStatus | None] = {}
    # Five more polled at once: the first read is shared by all of them.
    threads = [
        threading.Thread(target=lambda i=i: answers.__setitem__(i, poll.status(i))) for i in ids[3:]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert book.reads == 1
    assert sorted(answers) == ids[3:]
    assert all(a is not None and a.order_id == i for i, a in answers.items())
