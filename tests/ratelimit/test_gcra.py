"""The integer GCRA on its own, with time as a plain number."""

from __future__ import annotations

import math

import pytest

from mlgate.ratelimit import Decision, Limit, gcra, strictest

T = 6_000_000  # 10 a minute, in microseconds
NOW = 1_700_000_000_000_000  # a realistic epoch in microseconds


def run(hits: int, burst: int, cost: int = 1, now: int = NOW) -> tuple[int, int | None]:
    """Hits at one instant: how many were admitted, and the TAT left."""
    tat: int | None = None
    admitted = 0
    for _ in range(hits):
        allowed, after = gcra.step(tat, now, T, burst, cost)
        admitted += allowed
        tat = after
    return admitted, tat


@pytest.mark.parametrize("burst", [1, 2, 10, 1000])
def test_a_fresh_key_admits_exactly_burst_at_once(burst: int) -> None:
    admitted, tat = run(3 * burst, burst)
    assert admitted == burst
    assert tat == NOW + burst * T


def test_one_unit_comes_back_every_emission_interval() -> None:
    _, tat = run(10, burst=10)
    assert not gcra.step(tat, NOW + T - 1, T, 10, 1)[0]
    allowed, after = gcra.step(tat, NOW + T, T, 10, 1)
    assert allowed
    assert not gcra.step(after, NOW + T, T, 10, 1)[0]


def test_a_refusal_leaves_the_state_alone() -> None:
    _, tat = run(10, burst=10)
    assert gcra.step(tat, NOW, T, 10, 1) == (False, tat)


def test_a_long_idle_key_is_full_and_no_fuller() -> None:
    admitted, _ = run(30, burst=10, now=NOW)
    assert admitted == 10
    tat: int | None = NOW + 10 * T
    later = NOW + 1_000 * T
    count = 0
    for _ in range(30):
        allowed, tat = gcra.step(tat, later, T, 10, 1)
        count += allowed
    assert count == 10


def test_emission_interval_rounds_up_and_is_exact_for_round_rates() -> None:
    assert gcra.emission_interval_us(10, 60_000_000) == 6_000_000
    assert gcra.emission_interval_us(7, 60_000_000) == 8_571_429
    assert gcra.emission_interval_us(10**9, 1_000_000) == 1


def test_remaining_reset_and_retry_after() -> None:
    tat = NOW + 4 * T
    assert gcra.remaining(tat, NOW, T, 10) == 6
    assert gcra.remaining(NOW - T, NOW, T, 10) == 10
    assert gcra.remaining(NOW + 11 * T, NOW, T, 10) == 0
    assert gcra.reset_after_us(tat, NOW) == 4 * T
    assert gcra.reset_after_us(NOW - 5, NOW) == 0
    assert gcra.retry_after_us(NOW + 10 * T, NOW, T, 10, 1) == T
    assert gcra.retry_after_us(NOW + 10 * T, NOW, T, 10, 3) == 3 * T
    assert gcra.retry_after_us(NOW, NOW, T, 10, 1) == 0


def test_limit_validates_and_derives_its_interval() -> None:
    assert Limit.per_minute(10) == Limit(rate=10, period=60.0, burst=10)
    assert Limit.per_minute(10, burst=3).burst == 3
    assert Limit(rate=4, period=0.5, burst=1).emission_us == 125_000


@pytest.mark.parametrize(
    ("rate", "period", "burst"),
    [(0, 1.0, 1), (1, 0.0, 1), (1, -1.0, 1), (1, math.inf, 1), (1, 1.0, 0)],
)
def test_limit_refuses_nonsense(rate: int, period: float, burst: int) -> None:
    with pytest.raises(ValueError):
        Limit(rate=rate, period=period, burst=burst)


def test_decision_from_state() -> None:
    limit = Limit.per_minute(10)
    admitted = Decision.from_state(limit, 1, True, NOW + T, NOW)
    assert admitted == Decision(True, 10, 9, 6.0, 0.0)
    refused = Decision.from_state(limit, 2, False, NOW + 9 * T, NOW)
    assert refused == Decision(False, 10, 1, 54.0, 6.0)
    never = Decision.from_state(limit, 11, False, NOW, NOW)
    assert never.never and not never.allowed and never.retry_after == math.inf


def test_headers_round_seconds_up() -> None:
    admitted = Decision(True, 10, 9, 5.2, 0.0)
    assert admitted.headers() == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "9",
        "RateLimit-Reset": "6",
    }
    refused = Decision(False, 10, 0, 59.9, 0.001)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["RateLimit-Reset"] == "60"
    assert "Retry-After" not in Decision(False, 10, 10, 0.0, math.inf).headers()
    assert Decision.unchecked(Limit.per_minute(10)).headers() == {}


def test_strictest_prefers_refusals_then_the_fewest_remaining() -> None:
    roomy = Decision(True, 100, 80, 12.0, 0.0)
    tight = Decision(True, 10, 2, 48.0, 0.0)
    short_wait = Decision(False, 10, 0, 60.0, 1.0)
    long_wait = Decision(False, 10, 0, 60.0, 5.0)
    assert strictest([roomy, tight]) is tight
    assert strictest([roomy, short_wait, long_wait, tight]) is long_wait
