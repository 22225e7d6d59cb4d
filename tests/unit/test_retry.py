"""RetryPolicy, checked against Airflow 3's is_eligible_to_retry / next_retry_datetime."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from shared.state.retry import MAX_RETRY_DELAY_S, RetryPolicy, jitter_key

KEY = "dag#task#2024-01-01 00:00:00+00:00#1"


def _airflow_backoff(delay_s: float, multiplier: float, try_number: int, key: str, max_s) -> float:
    """Airflow 3's formula, transcribed with timedelta arithmetic as Airflow does it."""
    delay = timedelta(seconds=delay_s)
    try:
        min_backoff = math.ceil(delay.total_seconds() * (multiplier ** (try_number - 1)))
    except OverflowError:
        min_backoff = 86400
    min_backoff = max(min_backoff, 1)
    h = int(hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest(), 16)
    out = timedelta(seconds=min(min_backoff + h % min_backoff, 86400))
    if max_s:
        out = min(timedelta(seconds=max_s), out)
    return out.total_seconds()


# --- eligibility ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "try_number", "expected"),
    [
        (0, 1, False),
        (0, 2, False),
        (1, 1, True),
        (1, 2, False),
        (2, 1, True),
        (2, 2, True),
        (2, 3, False),
        (2, 4, False),
        (5, 5, True),
        (5, 6, False),
    ],
)
def test_can_retry(retries: int, try_number: int, expected: bool) -> None:
    policy = RetryPolicy(retries=retries)
    assert policy.can_retry(try_number) is expected
    assert (policy.next_delay(try_number) is not None) is expected


@pytest.mark.parametrize("retries", [0, 1, 3, 10])
def test_retries_n_means_n_plus_one_tries(retries: int) -> None:
    policy = RetryPolicy(retries=retries)
    assert policy.max_tries() == retries
    tries = 1
    while policy.can_retry(tries):
        tries += 1
    assert tries == retries + 1


@pytest.mark.parametrize("try_number", [0, -1])
def test_try_number_is_one_based(try_number: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy(retries=3).can_retry(try_number)
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy(retries=3).next_delay(try_number)


# --- constant delay ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "try_number", "expected"),
    [
        (RetryPolicy(retries=1), 1, 300.0),  # Airflow's default retry_delay
        (RetryPolicy(retries=3, retry_delay_s=10), 1, 10.0),
        (RetryPolicy(retries=3, retry_delay_s=10), 3, 10.0),  # no growth
        (RetryPolicy(retries=3, retry_delay_s=2.5), 2, 2.5),
        (RetryPolicy(retries=3, retry_delay_s=0), 1, 0.0),  # immediate retry
        (RetryPolicy(retries=3, retry_delay_s=600, max_retry_delay_s=60), 1, 600.0),  # cap ignored
        (RetryPolicy(retries=3, retry_delay_s=10, backoff=False), 3, 10.0),
        (RetryPolicy(retries=3, retry_delay_s=10, backoff=0), 3, 10.0),
        (RetryPolicy(retries=3, retry_delay_s=10, backoff=1.0), 3, 10.0),  # multiplier 1
        (RetryPolicy(retries=3, retry_delay_s=10, backoff=-2.0), 3, 10.0),  # negative
        (RetryPolicy(retries=3, retry_delay_s=100_000), 1, 100_000.0),  # no day cap either
    ],
)
def test_constant_delay(policy: RetryPolicy, try_number: int, expected: float) -> None:
    got = policy.next_delay(try_number, jitter_key=KEY)
    assert got == expected
    assert isinstance(got, float)
    assert not policy.uses_backoff


# --- exponential backoff -------------------------------------------------------------


def test_backoff_true_means_two() -> None:
    assert RetryPolicy(backoff=True).backoff == 2.0
    assert RetryPolicy(backoff=False).backoff == 0.0
    assert RetryPolicy(backoff=True).uses_backoff
    assert RetryPolicy(retries=5, retry_delay_s=7, backoff=True).next_delay(
        3, jitter_key=KEY
    ) == RetryPolicy(retries=5, retry_delay_s=7, backoff=2.0).next_delay(3, jitter_key=KEY)


@pytest.mark.parametrize(
    ("delay_s", "multiplier", "try_number", "max_s"),
    [
        (300, 2.0, 1, None),
        (300, 2.0, 2, None),
        (300, 2.0, 3, None),
        (10, 3.0, 4, None),
        (1.5, 2.0, 1, None),  # ceil(1.5) = 2
        (0.2, 2.0, 1, None),  # ceil -> 1
        (100, 0.5, 3, None),  # shrinking multiplier is honoured
        (300, 2.0, 3, 600),  # capped by max_retry_delay
        (300, 2.0, 3, 0),  # max_retry_delay 0 is "unset" (Airflow truthiness)
        (3600, 2.0, 10, None),  # capped at one day
        (3600, 2.0, 10, 7200),
    ],
)
@pytest.mark.parametrize("key", [KEY, "", "other#task#x#2"])
def test_backoff_matches_airflow_formula(
    delay_s: float, multiplier: float, try_number: int, max_s, key: str
) -> None:
    policy = RetryPolicy(
        retries=20, retry_delay_s=delay_s, backoff=multiplier, max_retry_delay_s=max_s
    )
    expected = _airflow_backoff(delay_s, multiplier, try_number, key, max_s)
    assert policy.next_delay(try_number, jitter_key=key) == expected


@pytest.mark.parametrize("try_number", [1, 2, 3, 4, 5, 6])
def test_backoff_jitter_range(try_number: int) -> None:
    policy = RetryPolicy(retries=10, retry_delay_s=5, backoff=2.0)
    m = math.ceil(5 * 2 ** (try_number - 1))
    for i in range(50):
        got = policy.next_delay(try_number, jitter_key=f"d#t#{i}#{try_number}")
        assert got is not None
        assert m <= got < 2 * m
        assert got == int(got)  # whole seconds


def test_backoff_is_deterministic_and_keyed() -> None:
    policy = RetryPolicy(retries=3, retry_delay_s=300, backoff=2.0)
    a = policy.next_delay(2, jitter_key="a")
    assert a == policy.next_delay(2, jitter_key="a")
    values = {policy.next_delay(2, jitter_key=str(i)) for i in range(20)}
    assert len(values) > 1


def test_pinned_value() -> None:
    # sha1("dag#task#2024-01-01 00:00:00+00:00#1") % 300 == 37, so 300 + 37
    h = int(hashlib.sha1(KEY.encode()).hexdigest(), 16) % 300
    assert RetryPolicy(retries=1, retry_delay_s=300, backoff=2.0).next_delay(1, jitter_key=KEY) == (
        300 + h
    )


def test_zero_delay_with_backoff_is_one_second() -> None:
    policy = RetryPolicy(retries=3, retry_delay_s=0, backoff=2.0)
    assert [policy.next_delay(t, jitter_key=KEY) for t in (1, 2, 3)] == [1.0, 1.0, 1.0]


def test_day_cap_and_overflow() -> None:
    policy = RetryPolicy(retries=10_000, retry_delay_s=60, backoff=2.0)
    assert policy.next_delay(30, jitter_key=KEY) == MAX_RETRY_DELAY_S
    assert policy.next_delay(5000, jitter_key=KEY) == MAX_RETRY_DELAY_S  # float overflow path
    capped = RetryPolicy(retries=10_000, retry_delay_s=60, backoff=2.0, max_retry_delay_s=90)
    assert capped.next_delay(5000, jitter_key=KEY) == 90.0


def test_max_retry_delay_caps_every_try() -> None:
    policy = RetryPolicy(retries=8, retry_delay_s=10, backoff=2.0, max_retry_delay_s=100)
    delays = [policy.next_delay(t, jitter_key=f"k{t}") for t in range(1, 9)]
    assert all(d is not None and d <= 100 for d in delays)
    assert delays[-1] == 100.0


def test_no_delay_when_exhausted_even_with_backoff() -> None:
    policy = RetryPolicy(retries=2, retry_delay_s=10, backoff=2.0)
    assert policy.next_delay(3, jitter_key=KEY) is None


# --- jitter_key, validation, value semantics ------------------------------------------


def test_jitter_key_matches_airflow_format() -> None:
    ld = datetime(2024, 1, 1, tzinfo=UTC)
    assert jitter_key("dag", "task", ld, 1) == KEY
    assert jitter_key("d", "t", None, 3) == "d#t#None#3"



def test_every_form_of_one_logical_date_gives_one_key() -> None:
    """The worker holds an ISO string, the scheduler a datetime: one key, Airflow's."""
    forms = [datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00+00:00",
             datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))]
    assert {jitter_key("dag", "task", ld, 1) for ld in forms} == {KEY}


def test_delay_after_derives_the_key_from_the_instance() -> None:
    policy = RetryPolicy(retries=3, retry_delay_s=60, backoff=2.0)
    expected = _airflow_backoff(60, 2.0, 1, KEY, None)
    assert policy.delay_after("dag", "task", "2024-01-01T00:00:00+00:00", 1) == expected
    assert policy.delay_after("dag", "task", datetime(2024, 1, 1, tzinfo=UTC), 1) == expected


def test_of_task_reads_an_operators_settings() -> None:
    op = SimpleNamespace(retries=None, retry_delay=timedelta(minutes=1),
                         retry_exponential_backoff=True, max_retry_delay=timedelta(hours=1))
    assert RetryPolicy.of_task(op) == RetryPolicy(0, 60.0, 2.0, 3600.0)
    op = SimpleNamespace(retries=2, retry_delay=None, retry_exponential_backoff=1.5,
                         max_retry_delay=None)
    assert RetryPolicy.of_task(op) == RetryPolicy(2, 0.0, 1.5, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"retry_delay_s": -1.0}, {"max_retry_delay_s": -5.0}],
)
def test_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_defaults_and_frozen() -> None:
    policy = RetryPolicy()
    assert (policy.retries, policy.retry_delay_s, policy.backoff, policy.max_retry_delay_s) == (
        0,
        300.0,
        0.0,
        None,
    )
    assert policy.next_delay(1) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.retries = 3  # type: ignore[misc]
    assert RetryPolicy(retries=2) == RetryPolicy(retries=2)
    assert hash(RetryPolicy(retries=2)) == hash(RetryPolicy(retries=2))


def test_of_task_names_the_task_with_a_bad_setting() -> None:
    op = SimpleNamespace(task_id="t", retries=1, retry_delay=timedelta(seconds=-5),
                         retry_exponential_backoff=False, max_retry_delay=None)
    with pytest.raises(ValueError, match=r"^task 't': retry_delay_s must be >= 0, got -5.0$"):
        RetryPolicy.of_task(op)
