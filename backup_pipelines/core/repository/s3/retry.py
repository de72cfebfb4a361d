"""The one retry layer for S3 requests: exponential backoff with full jitter, one budget per request.

botocore's own retries are off (`client.make_client` sets total_max_attempts=1), so this is
the only layer: a request (a part, a ranged GET, a listing page, a HEAD) is tried at most
`max_attempts` times, and a read that resumes after a reset counts its resumes against the
same budget (`Attempts`, the one helper every retry or resume loop uses). Full jitter (sleep
uniformly in [0, min(cap, base * 2**n)]) spreads the retries of parallel parts so a throttled
endpoint is not hit by a synchronized herd. The budget, and what Dagster adds on top, is
documented in docs/storage.md.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

log = logging.getLogger("backup_pipelines.stream")

T = TypeVar("T")

# Error codes worth another attempt: throttling, server-side trouble, and bodies that were
# damaged or cut in transit (S3 rejects those with a digest error; re-sending fixes them).
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "BadDigest",
        "IncompleteBody",
        "XAmzContentChecksumMismatch",
        "XAmzContentSHA256Mismatch",
        "OperationAborted",
    }
)


class Cancelled(Exception):
    """The transfer was aborted while a request was waiting for its next attempt."""


class Retryable(Exception):
    """Raised by our own checks (a short body, a checksum echo that disagrees) to ask for a retry."""


def error_code(err: BaseException) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(err: BaseException) -> int | None:
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None


def is_retryable(err: BaseException) -> bool:
    """Transient: 5xx, throttling, 408/429, digest errors, resets and timeouts."""
    if isinstance(err, Retryable):
        return True
    if isinstance(err, SSLError | ssl.SSLCertVerificationError) and "CERTIFICATE_VERIFY_FAILED" in str(err):
        return False  # a configuration problem: retrying only delays the error
    if isinstance(err, ClientError):
        status = http_status(err)
        # 501 NotImplemented is a permanent answer: the server lacks the feature.
        transient = status is not None and ((status >= 500 and status != 501) or status in (408, 429))
        return error_code(err) in RETRYABLE_CODES or transient
    if isinstance(
        err,
        BotoConnectionError
        | EndpointConnectionError
        | ConnectionClosedError
        | ReadTimeoutError
        | HTTPClientError
        | ResponseStreamingError
        | IncompleteReadError,
    ):
        return True
    if isinstance(err, BotoCoreError):
        return False
    # Errors raised while reading a response body ourselves (socket-level).
    return isinstance(err, OSError | http.client.HTTPException | TimeoutError)


def describe_error(err: BaseException) -> str:
    """One line naming the S3 error code and status, without request ids or credentials."""
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        status = http_status(err)
        msg = e.get("Message") or ""
        return f"{e.get('Code', 'error')} (HTTP {status}){': ' + msg if msg else ''}"
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a request is tried and how long to wait in between."""

    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 20.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """Full jitter for the wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return self.rng.uniform(0.0, ceiling)

    def wait(self, attempt: int, cancel: threading.Event | None) -> None:
        delay = self.delay(attempt)
        if cancel is None:
            threading.Event().wait(delay)
        elif cancel.wait(delay):
            raise Cancelled()

    def worst_case_wait(self) -> float:
        """The longest one request can spend sleeping between its attempts (the budget's bound)."""
        return sum(min(self.max_delay, self.base_delay * 2 ** (n - 1)) for n in range(1, self.max_attempts))

    def attempts(self, what: str, cancel: threading.Event | None = None) -> Attempts:
        return Attempts(self, what, cancel)

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        cancel: threading.Event | None = None,
        retryable: Callable[[BaseException], bool] = is_retryable,
    ) -> T:
        """Run `fn` until it succeeds, fails for good, or the attempts run out (last error raised)."""
        tries = self.attempts(what, cancel)
        while True:
            tries.check_cancel()
            try:
                return fn()
            except Exception as err:
                tries.failed(err, retryable=retryable)


class Attempts:
    """One request's budget, shared by its retries and resumes (the one resume helper).

    A loop that can pick up where it broke off (a GET resumed at the last byte received, a
    listing re-requested from its last page) calls `failed(err)` on each failure: it re-raises
    when the error is permanent or the budget is spent, otherwise logs, sleeps and returns so
    the loop resumes. `used` is how many attempts failed so far.
    """

    def __init__(self, policy: RetryPolicy, what: str, cancel: threading.Event | None = None) -> None:
        self.policy = policy
        self.what = what
        self.cancel = cancel
        self.used = 0

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def failed(
        self, err: BaseException, *, at: str = "", retryable: Callable[[BaseException], bool] = is_retryable
    ) -> None:
        """Re-raise `err` unless another attempt is allowed; then wait for it."""
        self.used += 1
        if self.used >= self.policy.max_attempts or not retryable(err):
            raise err
        log.warning(
            "%s%s failed (attempt %d/%d): %s; retrying",
            self.what,
            f" at {at}" if at else "",
            self.used,
            self.policy.max_attempts,
            describe_error(err),
        )
        self.policy.wait(self.used, self.cancel)
