"""The one parser of s3:// URLs: a repository (s3://bucket/prefix) or an object (s3://bucket/key).

Keys are taken literally (no percent-decoding, no query or fragment): S3 keys may hold
any of those characters, and a URL typed by an operator means the key it spells.
"""

from __future__ import annotations

from ...errors import ConfigError

SCHEME = "s3://"


def parse_s3_url(url: str, *, object_key: bool = False) -> tuple[str, str]:
    """s3://bucket/path -> (bucket, path).

    For a repository (the default) the path is a prefix: '' or ending with '/'. For an
    object (`object_key=True`) it is the key, which must not be empty.
    """
    shape = "s3://bucket/key" if object_key else "s3://bucket/prefix"
    if not url.startswith(SCHEME):
        raise ConfigError(f"{url!r} is not an S3 URL", hint=f"write it as {shape}")
    bucket, _, path = url[len(SCHEME) :].partition("/")
    if not bucket:
        raise ConfigError(f"S3 URL {url!r} names no bucket", hint=f"write it as {shape}")
    if object_key:
        if not path or path.endswith("/"):
            raise ConfigError(f"S3 URL {url!r} names no object key", hint=f"write it as {shape}")
        return bucket, path
    path = path.strip("/")
    return bucket, (path + "/" if path else "")


def check_endpoint_url(url: str, what: str = "endpoint_url") -> str:
    """An S3 endpoint is http(s)://host[:port]; anything else is the operator's typo, said so plainly."""
    from urllib.parse import urlparse

    try:
        parsed = urlparse(url)
        port_ok = parsed.port is None or parsed.port > 0
    except ValueError:
        port_ok = False
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname or not port_ok:
        raise ConfigError(
            f"{what} {url!r} is not an S3 endpoint URL",
            hint="write it as http(s)://host[:port], e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000",
        )
    return url
