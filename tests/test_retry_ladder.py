"""The retry ladder (hub.sources.next_step), shared by the API client and the blob fetcher;
pure: no socket, no sleep."""

from __future__ import annotations

import pytest

from hfpull.hub.sources import (
    Failure,
    Leave,
    Outcome,
    Retry,
    RetryPolicy,
    Source,
    SourcePool,
    attempts_on,
    next_step,
)

POLICY = RetryPolicy(max_retries=4, backoff_base=1.0, backoff_max=30.0, retry_after_max=120.0)
TRANSIENT = Failure(Outcome.TRANSIENT)


def ladder(failure: Failure, is_last: bool, quick: bool = False) -> list[Retry | Leave]:
    """Steps after the 1st, 2nd... failure in a row, up to the first that leaves."""
    steps: list[Retry | Leave] = []
    for failures in range(1, 100):
        steps.append(next_step(failure, failures, is_last=is_last, policy=POLICY, quick=quick))
        if isinstance(steps[-1], Leave):
            return steps
    raise AssertionError("the ladder never ends")


def test_three_tries_per_mirror_and_max_retries_plus_one_on_the_last_source() -> None:
    assert attempts_on(False, POLICY) == 3 and attempts_on(True, POLICY) == POLICY.max_retries + 1
    assert attempts_on(True, POLICY, quick=True) == attempts_on(False, POLICY, quick=True) == 1
    mirror, last = ladder(TRANSIENT, is_last=False), ladder(TRANSIENT, is_last=True)
    assert [type(s) for s in mirror] == [Retry, Retry, Leave] and mirror[-1] is Leave.FAILED
    assert len(last) == POLICY.max_retries + 1 and last[-1] is Leave.FAILED
    assert ladder(TRANSIENT, is_last=True, quick=True) == [Leave.FAILED]


@pytest.mark.parametrize("is_last", [False, True])
@pytest.mark.parametrize("outcome", [Outcome.TLS, Outcome.ANSWER])
def test_tls_errors_and_definitive_answers_move_on_at_once(outcome: Outcome, is_last: bool) -> None:
    assert next_step(Failure(outcome), 1, is_last=is_last, policy=POLICY) is Leave.NEXT


def test_unreachable_drops_a_source_unless_it_is_the_last() -> None:
    unreachable = Failure(Outcome.UNREACHABLE)
    assert next_step(unreachable, 1, is_last=False, policy=POLICY) is Leave.DROP
    on_last = ladder(unreachable, is_last=True)  # nothing to fall back on: retried as usual
    assert [type(s) for s in on_last] == [Retry] * POLICY.max_retries + [Leave]
    assert on_last[-1] is Leave.FAILED


def test_backoff_grows_and_honours_retry_after() -> None:
    for failures in (1, 2, 3):
        step = next_step(TRANSIENT, failures, is_last=True, policy=POLICY)
        assert isinstance(step, Retry)
        assert 0.5 * 2 ** (failures - 1) <= step.delay <= 2 ** (failures - 1)
    slow = next_step(Failure(Outcome.TRANSIENT, 50.0), 1, is_last=True, policy=POLICY)
    capped = next_step(Failure(Outcome.TRANSIENT, 999.0), 1, is_last=True, policy=POLICY)
    assert slow == Retry(50.0) and capped == Retry(POLICY.retry_after_max)


def _pool(*names: str) -> SourcePool:
    return SourcePool([Source(f"https://{n}", is_origin=n == "hub") for n in names])


def test_settle_counts_drops_and_retries() -> None:
    pool = _pool("mirror", "hub")
    mirror, hub = pool.sources
    assert pool.settle(mirror, TRANSIENT, 1, is_last=False, policy=POLICY) is not None
    assert pool.settle(mirror, TRANSIENT, 3, is_last=False, policy=POLICY) is None
    assert mirror.consecutive_failures == 1 and not mirror.dropped
    unreachable = Failure(Outcome.UNREACHABLE)
    assert pool.settle(mirror, unreachable, 1, is_last=False, policy=POLICY) is None
    assert mirror.dropped and mirror.consecutive_failures == 1  # dropped, not counted
    # the hub is the only source left: it is retried, never dropped
    assert pool.settle(hub, unreachable, 1, is_last=True, policy=POLICY) is not None
    assert not hub.dropped


def test_an_unreachable_source_whose_peers_were_dropped_meanwhile_is_retried() -> None:
    pool = _pool("mirror", "hub")
    mirror, hub = pool.sources
    hub.dropped = True  # by another thread, after this request listed its sources
    unreachable = Failure(Outcome.UNREACHABLE)
    assert isinstance(pool.settle(mirror, unreachable, 1, is_last=False, policy=POLICY), Retry)
    assert not mirror.dropped
    assert pool.settle(mirror, unreachable, 3, is_last=False, policy=POLICY) is None
    assert mirror.consecutive_failures == 1


def test_answers_and_tls_errors_leave_the_pool_alone() -> None:
    pool = _pool("mirror", "hub")
    mirror = pool.sources[0]
    for outcome in (Outcome.ANSWER, Outcome.TLS):
        assert pool.settle(mirror, Failure(outcome), 1, is_last=False, policy=POLICY) is None
    assert mirror.consecutive_failures == 0 and not mirror.dropped
