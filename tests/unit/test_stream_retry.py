"""Which S3 errors are retried, full-jitter backoff bounds, the attempt budget, and cancellation."""

from __future__ import annotations

import random
import threading

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from backup_pipelines.core.errors import ConfigError, IntegrityError, NotFoundError, StorageError
from backup_pipelines.core.repository.s3 import parse_s3_url
from backup_pipelines.core.repository.s3.client import storage_error
from backup_pipelines.core.repository.s3.retry import Cancelled, RetryPolicy, is_retryable

pytestmark = pytest.mark.unit


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "UploadPart",
    )


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("RequestTimeout", 400), True),
        (client_error("BadDigest", 400), True),
        (client_error("Whatever", 502), True),
        (client_error("TooManyRequests", 429), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (client_error("NoSuchUpload", 404), False),
        (client_error("InvalidPart", 400), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (NoCredentialsError(), False),
        (ValueError("bug"), False),
    ],
)
def test_retryable_classification(err, expected):
    assert is_retryable(err) is expected


def test_full_jitter_stays_within_the_exponential_ceiling():
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, rng=random.Random(7))
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole interval


def test_call_retries_transient_errors_then_gives_up_with_the_last_one():
    policy = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.002)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise client_error("SlowDown", 503)
        return "ok"

    assert policy.call(flaky, what="test") == "ok" and len(calls) == 3

    calls.clear()

    def always_down():
        calls.append(1)
        raise client_error("InternalError", 500)

    with pytest.raises(ClientError):
        policy.call(always_down, what="test")
    assert len(calls) == 4


def test_call_does_not_retry_permanent_errors():
    policy = RetryPolicy(max_attempts=5, base_delay=0.001)
    calls = []

    def denied():
        calls.append(1)
        raise client_error("AccessDenied", 403)

    with pytest.raises(ClientError):
        policy.call(denied, what="test")
    assert len(calls) == 1


def test_cancel_interrupts_the_backoff_sleep():
    policy = RetryPolicy(max_attempts=5, base_delay=60.0, max_delay=60.0, rng=random.Random(1))
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(Cancelled):
        policy.call(lambda: (_ for _ in ()).throw(client_error("SlowDown", 503)), what="t", cancel=cancel)


def test_errors_are_mapped_with_bucket_and_key_and_no_secrets():
    nf = storage_error(client_error("NoSuchBucket", 404), action="read", bucket="bkt", key="a/b")
    assert isinstance(nf, NotFoundError) and "bkt" in nf.message and nf.hint
    nk = storage_error(client_error("NoSuchKey", 404), action="read", bucket="bkt", key="a/b")
    assert isinstance(nk, NotFoundError) and nk.key == "s3://bkt/a/b"
    denied = storage_error(client_error("AccessDenied", 403), action="upload", bucket="bkt", key="k")
    assert isinstance(denied, StorageError) and "s3:PutObject" in (denied.hint or "")
    creds = storage_error(client_error("InvalidAccessKeyId", 403), action="upload", bucket="bkt", key="k")
    assert "credentials" in creds.message and "AKIA" not in creds.render()
    changed = storage_error(client_error("PreconditionFailed", 412), action="read", bucket="bkt", key="k")
    assert isinstance(changed, IntegrityError)
    down = storage_error(
        client_error("SlowDown", 503, "Please reduce"),
        action="upload part 3 of",
        bucket="bkt",
        key="k",
        attempts=8,
    )
    assert "after 8 attempts" in down.message and "SlowDown" in down.message and "s3://bkt/k" in down.message


def test_parse_s3_url():
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b") == ("bucket", "a/b/")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3_url("s3://bucket/a/b.xb", object_key=True) == ("bucket", "a/b.xb")
    for bad in ("file:///x", "s3:///prefix", "notaurl"):
        with pytest.raises(ConfigError):
            parse_s3_url(bad)
    for bad in ("s3://bucket", "s3://bucket/", "s3://bucket/dir/"):
        with pytest.raises(ConfigError):
            parse_s3_url(bad, object_key=True)
