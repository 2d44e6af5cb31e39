"""Storage target URLs: the one parser, used by policy validation and by every backend.

    file:///absolute/path                  local disk or a mounted NAS
    s3://bucket/prefix?region=..&endpoint_url=..&profile=..
    gs://bucket/prefix?project=..
    az://container/prefix?account=..

A URL names where objects go, never how to authenticate: credentials come from the SDK's
standard chain or from the named ``credentials_secret``, and a URL that carries a secret
(user info, a signature or key in the query) is refused. Every rule a service applies to
names (bucket and container names, prefixes) is checked here, so that a URL that validates
is one the backend can open. Errors are one line saying what to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from vowvault.errors import ConfigError

PROVIDERS = {"file": "local", "s3": "s3", "gs": "gcs", "az": "azure"}
"""URL scheme -> provider name (as ``Properties.provider`` and the catalog record it)."""

OPTIONS: Mapping[str, Mapping[str, str]] = {
    "file": {},
    "s3": {"region": "region", "endpoint_url": "endpoint_url", "endpoint": "endpoint_url",
           "profile": "profile"},
    "gs": {"project": "project"},
    "az": {"account": "account"},
}
"""Query options each scheme understands (spelling in the URL -> option name)."""

_SECRET_KEYS = {"key", "secret", "password", "token", "sig", "signature", "accountkey",
                "access_key", "secret_key", "sas", "credential", "sv", "se", "sp"}

_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_AZ_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")


@dataclass(frozen=True)
class TargetURL:
    scheme: str
    container: str
    """Bucket (S3, GCS) or container (Azure); empty for file URLs."""
    path: str
    """file: the absolute root directory; clouds: the prefix, without leading or trailing
    slashes (empty for the whole bucket)."""
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        return PROVIDERS[self.scheme]

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"{self.scheme}://{self.container}" + (f"/{self.path}" if self.path else "")


def parse_target_url(url: str) -> TargetURL:
    """Check a storage target URL and take it apart (pure; ``ConfigError`` on any
    problem)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise ConfigError(f"not a storage URL: {url!r} ({exc})") from None
    scheme = parts.scheme
    if scheme not in PROVIDERS:
        raise ConfigError(f"unknown storage scheme in {url!r}; use one of "
                          + ", ".join(f"{s}://" for s in PROVIDERS))
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{url!r} contains credentials; use the SDK's environment or "
                          f"credentials_secret instead")
    if parts.fragment:
        raise ConfigError(f"{url!r}: a storage URL has no #fragment")
    query = parse_qs(parts.query, keep_blank_values=True)
    if {k.lower() for k in query} & _SECRET_KEYS:
        raise ConfigError(f"{url!r} carries a secret in its query string; use "
                          f"credentials_secret")
    known = OPTIONS[scheme]
    options: dict[str, str] = {}
    for key, values in query.items():
        if key not in known:
            raise ConfigError(f"unknown option {key!r} in {url!r}; "
                              + (f"known: {', '.join(sorted(known))}" if known else
                                 f"{scheme}:// URLs take no options"))
        if len(values) != 1 or not values[0]:
            raise ConfigError(f"option {key!r} in {url!r} needs exactly one value")
        options[known[key]] = values[0]
    endpoint = options.get("endpoint_url")
    if endpoint is not None:
        ep = urlsplit(endpoint)
        try:
            ep.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            ep = ep._replace(scheme="")
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise ConfigError(f"endpoint_url in {url!r} must be an http:// or https:// address "
                              f"(http://127.0.0.1:9000)")
    path = unquote(parts.path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ConfigError(f"file URLs need an absolute path: file:///path, not {url!r}")
        _check_segments(url, path.strip("/"), allow_empty=False)
        return TargetURL(scheme, "", "/" + path.strip("/"), options)
    container = parts.netloc
    if not container:
        raise ConfigError(f"{url!r} names no bucket or container")
    _check_container(url, scheme, container)
    prefix = path.strip("/")
    _check_segments(url, prefix, allow_empty=False)
    if scheme == "gs" and len((prefix + "/").encode()) > 512:
        raise ConfigError(f"{url!r}: the prefix is too long for Cloud Storage names")
    return TargetURL(scheme, container, prefix, options)


def _check_container(url: str, scheme: str, name: str) -> None:
    if scheme == "s3":
        if not _S3_BUCKET.fullmatch(name) or ".." in name or _IP.fullmatch(name):
            raise ConfigError(f"{url!r}: {name!r} is not a valid S3 bucket name (3 to 63 "
                              f"lower-case letters, digits, dots and hyphens)")
    elif scheme == "gs":
        if not _GCS_BUCKET.fullmatch(name) or ".." in name or _IP.fullmatch(name) \
                or ("." not in name and len(name) > 63) or name.startswith("goog"):
            raise ConfigError(f"{url!r}: {name!r} is not a valid Cloud Storage bucket name "
                              f"(3 to 63 lower-case letters, digits, hyphens and "
                              f"underscores)")
    elif not _AZ_CONTAINER.fullmatch(name):
        raise ConfigError(f"{url!r}: {name!r} is not a valid container name (3 to 63 "
                          f"lower-case letters, digits and single hyphens)")


def _check_segments(url: str, path: str, *, allow_empty: bool) -> None:
    if not path:
        return
    for segment in path.split("/"):
        if segment in (".", "..") or (not segment and not allow_empty):
            raise ConfigError(f"{url!r}: the path may not hold empty, '.' or '..' segments")
        if any(ord(c) < 32 for c in segment):
            raise ConfigError(f"{url!r}: the path holds a control character")
