"""engine.budget (the run's connection slots) and engine.adaptive (how many), as pure code."""

from __future__ import annotations

import threading

from hfpull.engine.adaptive import REPROBE_INTERVALS, AdaptiveCount
from hfpull.engine.budget import MAX_CONNECTIONS, START_CONNECTIONS, ConnectionBudget
from hfpull.settings import Settings

# -- AdaptiveCount ---------------------------------------------------------------------------


def feed(count: AdaptiveCount, rate_at: dict[int, float] | None = None, n: int = 1) -> int:
    """``n`` saturated intervals at the rate the current limit would give."""
    for _ in range(n):
        rate = (rate_at or {}).get(count.limit, 10.0 * count.limit)
        count.observe(rate, saturated=True)
    return count.limit


def link(per_connection: float, total: float) -> dict[int, float]:
    """Rate by connection count on a link capped per connection and in total."""
    return {n: min(total, n * per_connection) for n in range(1, MAX_CONNECTIONS + 1)}


def test_it_opens_more_while_the_rate_keeps_rising_up_to_the_ceiling() -> None:
    count = AdaptiveCount(8, 32)
    limits = [feed(count) for _ in range(12)]  # rate proportional to connections: always more
    assert limits[-1] == 32
    assert limits == sorted(limits)  # never went down


def test_it_stops_where_more_connections_stop_helping() -> None:
    count = AdaptiveCount(8, 32)
    rates = link(per_connection=20.0, total=200.0)  # 10 connections fill it
    for _ in range(20):
        feed(count, rates)
    # 8 -> 16 gave +25%; 16 -> 32 gave nothing and was undone; so was the finer 16 -> 24.
    assert count.limit == 16


def test_a_flat_step_is_undone_then_a_finer_one_then_it_waits() -> None:
    count = AdaptiveCount(8, 32)
    flat = {n: 100.0 for n in range(1, 33)}
    feed(count, flat, 2)  # baseline and a step to 16, then an interval to settle
    assert count.limit == 16
    feed(count, flat, 2)  # judged: no gain -> back to 8 (and settle)
    assert count.limit == 8
    feed(count, flat, 2)  # a finer step
    assert count.limit == 12
    feed(count, flat, 2)
    assert count.limit == 8
    feed(count, flat, REPROBE_INTERVALS)
    assert count.limit == 8  # holding
    feed(count, flat, 2)
    assert count.limit == 12  # probing again


def test_rates_measured_while_the_limit_did_not_bind_are_ignored() -> None:
    count = AdaptiveCount(8, 32)
    for _ in range(10):
        count.observe(1e9, saturated=False)
    assert count.limit == 8


def test_congestion_halves_at_once_and_caps_growth_below_that_level() -> None:
    count = AdaptiveCount(16, 32)
    assert count.congestion() == 8
    assert count.congestion() == 8  # the same burst of 429s: ignored during the cooldown
    for _ in range(20):
        feed(count)  # the rate would keep rising, but 16 is where the server pushed back
    assert count.limit == 15
    assert count.ceiling == 15


def test_congestion_never_goes_below_one() -> None:
    count = AdaptiveCount(1, 32)
    assert count.congestion() == 1
    assert count.ceiling == 1


# -- ConnectionBudget ------------------------------------------------------------------------


def test_settings_pin_or_adapt() -> None:
    pinned = ConnectionBudget.from_settings(Settings(connections=3))
    assert (pinned.limit, pinned.adaptive) == (3, False)
    auto = ConnectionBudget.from_settings(Settings())
    assert (auto.limit, auto.adaptive) == (START_CONNECTIONS, True)


def test_a_pinned_budget_ignores_congestion_and_rate_samples() -> None:
    budget = ConnectionBudget(4, adaptive=False)
    budget.congested()
    for _ in range(10):
        budget.sample(1e9)
    assert budget.limit == 4


def test_an_adaptive_budget_backs_off_on_congestion() -> None:
    budget = ConnectionBudget(8, adaptive=True)
    budget.congested()
    assert budget.limit == 4


def test_primaries_wait_for_a_free_slot_and_extras_never_wait() -> None:
    budget = ConnectionBudget(2, adaptive=False)
    cancel = threading.Event()
    a, b = budget.acquire(cancel), budget.acquire(cancel)
    assert a is not None and b is not None
    assert budget.try_extra() is None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(budget.acquire(cancel)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # blocked: the budget is full
    budget.release(a)
    waiter.join(5)
    assert got and got[0] is not None
    assert budget.in_use == 2 and budget.peak == 2


def test_a_waiting_primary_goes_before_any_extra() -> None:
    budget = ConnectionBudget(2, adaptive=False)
    cancel = threading.Event()
    held = budget.acquire(cancel)
    assert held is not None and budget.acquire(cancel) is not None
    waiter = threading.Thread(target=budget.acquire, args=(cancel,))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    budget.release(held)
    assert budget.try_extra() is None  # the freed slot is the waiting primary's
    waiter.join(5)
    assert not waiter.is_alive() and budget.in_use == 2


def test_a_cancelled_wait_returns_none() -> None:
    budget = ConnectionBudget(1, adaptive=False)
    cancel = threading.Event()
    assert budget.acquire(cancel) is not None
    cancel.set()
    assert budget.acquire(cancel) is None


def test_extras_shed_when_the_limit_drops_and_primaries_stay() -> None:
    budget = ConnectionBudget(8, adaptive=True)
    cancel = threading.Event()
    primary = budget.acquire(cancel)
    extras = [budget.try_extra() for _ in range(7)]
    assert primary is not None and all(e is not None for e in extras)
    assert not budget.over_limit
    budget.congested()  # 8 -> 4
    assert budget.over_limit and budget.shed_now  # pushed back: leave mid-piece
    assert not budget.shed(primary)
    shed = [e for e in extras if e is not None and budget.shed(e)]
    assert len(shed) == 4  # exactly down to the new limit, not one more
    assert budget.in_use == 4 and not budget.over_limit and not budget.shed_now


def test_a_step_up_that_gave_nothing_sheds_at_piece_ends_only() -> None:
    budget = ConnectionBudget(8, adaptive=True)
    primary = budget.acquire(threading.Event())
    extras = [budget.try_extra() for _ in range(7)]
    assert primary is not None and all(e is not None for e in extras)

    def full_interval(rate: float) -> int:
        assert budget.try_extra() is None  # the limit refuses one more: it is binding
        return budget.sample(rate)

    assert full_interval(100e6) == 16  # baseline at 8, then a step up is tried
    extras += [budget.try_extra() for _ in range(8)]
    assert all(e is not None for e in extras)
    assert full_interval(100e6) == 16  # the new connections open (ignored)
    assert full_interval(101e6) == 8  # no gain: back to 8
    assert budget.over_limit and not budget.shed_now  # extras leave when their piece ends
    left = [e for e in extras if e is not None and budget.shed(e)]
    assert len(left) == 8 and not budget.over_limit


def test_received_bytes_survive_the_slot() -> None:
    budget = ConnectionBudget(2, adaptive=True)
    slot = budget.acquire(threading.Event())
    assert slot is not None
    slot.received += 1000
    assert budget.received() == 1000
    budget.release(slot)
    assert budget.received() == 1000
