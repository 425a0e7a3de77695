"""The ClickHouse retry loop (sinks.retry) and the error classification it relies on (sinks.clickhouse): outages
and permanent errors are both retried until they succeed, but counted, logged and flagged apart; a stop request
ends the loop at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from clickhouse_driver import errors as driver_errors
from hypothesis import given
from hypothesis import strategies as st

from satpulse import metrics
from sinks import retry
from sinks.clickhouse import STATEMENT_CHARS, TRANSIENT_CODES, ClickHouseError, error_code
from sinks.retry import RetryStopped, retry_clickhouse

SYNTAX = "Code: 62. DB::Exception: Syntax error: failed at position 1 ('SELEC'): SELEC 1. Expected one of: ..."
MEMORY = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.31 GiB. (MEMORY_LIMIT_EXCEEDED)"


def errors_count(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("satpulse_sink_errors_total", {"sink": "clickhouse", "kind": kind}) or 0.0


def blocked() -> float:
    value = metrics.REGISTRY.get_sample_value("satpulse_sink_blocked_permanent", {"sink": "clickhouse"})
    assert value is not None  # exposed from import on
    return value


def failing(*failures: ClickHouseError, result: str = "ok") -> tuple[Callable[[], str], list[float]]:
    """A call that raises ``failures`` one per attempt, then returns ``result``; and the gauge seen per attempt."""
    pending: Iterator[ClickHouseError] = iter(failures)
    seen: list[float] = []

    def call() -> str:
        seen.append(blocked())
        failure = next(pending, None)
        if failure is not None:
            raise failure
        return result

    return call, seen


def permanent(statement: str = "SELEC %(x)s") -> ClickHouseError:
    return ClickHouseError.wrap(RuntimeError(SYNTAX), statement)


# ------------------------------------------------------------------------------------------------ the loop


def test_transient_errors_are_retried_with_backoff_until_success() -> None:
    before = errors_count("transient"), errors_count("permanent")
    sleeps: list[float] = []
    call, seen = failing(ClickHouseError("connection refused"), ClickHouseError.wrap(RuntimeError(MEMORY)))
    assert retry_clickhouse("write", call, sleep=sleeps.append) == "ok"
    assert sleeps == [0.2, 0.4]
    assert (errors_count("transient"), errors_count("permanent")) == (before[0] + 2, before[1])
    assert seen == [0.0, 0.0, 0.0] and blocked() == 0.0  # an outage is not a blocked statement


def test_backoff_doubles_up_to_max_delay() -> None:
    sleeps: list[float] = []
    call, _ = failing(*[ClickHouseError("timeout")] * 6)
    retry_clickhouse("write", call, max_delay=1.0, sleep=sleeps.append)
    assert sleeps == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_permanent_error_is_retried_counted_flagged_and_its_statement_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sinks.retry")
    before = errors_count("transient"), errors_count("permanent")
    call, seen = failing(*[permanent()] * 4, result="written")
    assert retry_clickhouse("window write", call, sleep=lambda _: None) == "written"  # nothing skipped
    assert (errors_count("transient"), errors_count("permanent")) == (before[0], before[1] + 4)
    assert seen == [0.0, 1.0, 1.0, 1.0, 1.0] and blocked() == 0.0  # flagged while stuck, cleared by the success
    records = [r for r in caplog.records if r.name == "sinks.retry"]
    assert [r.levelno for r in records] == [logging.ERROR] + [logging.WARNING] * 3
    assert "SELEC %(x)s" in records[0].getMessage() and "62" in records[0].getMessage()
    assert all("SELEC" not in r.getMessage() and "62" in r.getMessage() for r in records[1:])


def test_each_distinct_permanent_code_is_logged_at_error_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sinks.retry")
    unknown_table = ClickHouseError.wrap(RuntimeError("Code: 60. DB::Exception: Unknown table"), "INSERT INTO x")
    call, _ = failing(permanent(), unknown_table, permanent(), unknown_table)
    retry_clickhouse("write", call, sleep=lambda _: None)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "SELEC" in errors[0] and "INSERT INTO x" in errors[1]


def test_permanent_then_transient_stays_flagged_until_success() -> None:
    call, seen = failing(permanent(), ClickHouseError("connection refused"), permanent())
    retry_clickhouse("write", call, sleep=lambda _: None)
    assert seen == [0.0, 1.0, 1.0, 1.0] and blocked() == 0.0


def test_stop_requested_before_the_call_raises_after_one_attempt_without_waiting() -> None:
    stopping = threading.Event()
    stopping.set()
    call, seen = failing(permanent(), permanent())

    def no_sleep(_: float) -> None:
        raise AssertionError("sleep is not used when stopping is given")

    with pytest.raises(RetryStopped) as raised:
        retry_clickhouse("write", call, sleep=no_sleep, stopping=stopping)
    assert len(seen) == 1 and isinstance(raised.value.__cause__, ClickHouseError)
    assert blocked() == 0.0  # a stopped loop is no longer stuck


def test_stop_interrupts_a_long_backoff_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_DELAY", 60.0)
    stopping = threading.Event()
    call, seen = failing(*[ClickHouseError("connection refused")] * 3)
    timer = threading.Timer(0.1, stopping.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(RetryStopped):
            retry_clickhouse("write", call, max_delay=60.0, stopping=stopping)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5.0 and len(seen) == 1


def test_stopping_not_set_waits_on_the_event_and_succeeds() -> None:
    call, seen = failing(ClickHouseError("connection refused"))
    assert retry_clickhouse("write", call, stopping=threading.Event()) == "ok" and len(seen) == 2


def test_other_exceptions_propagate_and_clear_the_flag() -> None:
    calls = iter([permanent(), ValueError("a bug")])

    def call() -> None:
        raise next(calls)

    with pytest.raises(ValueError, match="a bug"):
        retry_clickhouse("write", call, sleep=lambda _: None)
    assert blocked() == 0.0


# ------------------------------------------------------------------------------------------------ classification


@pytest.mark.parametrize(("message", "code", "is_permanent"), [
    (SYNTAX, 62, True),
    ("Code: 60. DB::Exception: Table satpulse.nope does not exist. (UNKNOWN_TABLE)", 60, True),
    ("Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH)", 53, True),
    ("Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'x'. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)",
     27, True),
    (MEMORY, 241, False),
    ("Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower", 252, False),
    ("Code: 159. DB::Exception: Timeout exceeded: elapsed 60 seconds", 159, False),
    ("chDB session closed", None, False),
    ("", None, False),
])
def test_code_is_parsed_from_chdb_messages(message: str, code: int | None, is_permanent: bool) -> None:
    error = ClickHouseError.wrap(RuntimeError(message), "SELECT 1")
    assert (error.code, error.permanent, str(error)) == (code, is_permanent, message)


def test_code_comes_from_clickhouse_driver_exceptions() -> None:
    server = driver_errors.ServerException("DB::Exception: Syntax error: failed at position 1", code=62)
    assert (error_code(server), ClickHouseError.wrap(server).permanent) == (62, True)
    refused = driver_errors.NetworkError("Connection refused (127.0.0.1:1)")
    assert (error_code(refused), ClickHouseError.wrap(refused).permanent) == (210, False)
    does_not_fit = driver_errors.TypeMismatchError("Column n: ubyte format requires 0 <= number <= 255")
    assert (error_code(does_not_fit), ClickHouseError.wrap(does_not_fit).permanent) == (53, True)
    assert error_code(driver_errors.PartiallyConsumedQueryError()) is None  # code -1: not a ClickHouse code


@pytest.mark.parametrize("exc", [ConnectionRefusedError(111, "Connection refused"), EOFError("Unexpected EOF"),
                                 TimeoutError("timed out"), OSError("Network is unreachable")])
def test_errors_without_a_code_are_transient(exc: BaseException) -> None:
    error = ClickHouseError.wrap(exc, "SELECT 1")
    assert (error.code, error.permanent) == (None, False)


def test_statement_is_truncated_and_optional() -> None:
    assert ClickHouseError.wrap(RuntimeError(SYNTAX), "S" * 2000).statement == "S" * STATEMENT_CHARS
    assert ClickHouseError("connection refused").statement is None


def test_transient_codes_are_distinct_and_exclude_statement_errors() -> None:
    assert len(set(TRANSIENT_CODES)) == len(TRANSIENT_CODES) and list(TRANSIENT_CODES) == sorted(TRANSIENT_CODES)
    assert not {6, 27, 47, 53, 60, 62} & set(TRANSIENT_CODES)  # parse, identifier, type, table, syntax


@given(st.text())
def test_classification_never_raises_for_any_message(message: str) -> None:
    error = ClickHouseError.wrap(RuntimeError(message), message)
    assert isinstance(error.permanent, bool)
    assert error.code is None or error.code >= 0


@given(st.integers(min_value=1, max_value=999_999_999), st.text())
def test_code_prefix_of_any_message_is_found(code: int, rest: str) -> None:
    error = ClickHouseError.wrap(RuntimeError(f"Code: {code}. DB::Exception: {rest}"))
    assert error.code == code and error.permanent == (code not in TRANSIENT_CODES)
