"""Storage targets: one interface (``base.StorageBackend``), one module per backend of the
same shape (a ``...Config`` with ``from_url``, the backend class, its SDK's errors
translated at its edge), one URL parser (``url``), one registry mapping URL schemes to
backends, and one place (``wrap``) that adds retries, connection limits and logging."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vowvault.storage.base import ObjectInfo, Properties, StorageBackend
from vowvault.storage.url import TargetURL, parse_target_url
from vowvault.storage.wrap import RetryPolicy, wrap

__all__ = ["ObjectInfo", "Properties", "StorageBackend", "TargetURL", "open_backend",
           "parse_target_url", "register"]

Factory = Callable[[str, "str | None"], StorageBackend]
_REGISTRY: dict[str, Factory] = {}


def register(scheme: str, factory: Factory) -> None:
    _REGISTRY[scheme] = factory


def _local(url: str, secret: str | None) -> StorageBackend:
    from vowvault.storage.local import LocalBackend, LocalConfig

    return LocalBackend(LocalConfig.from_url(url))


def _s3(url: str, secret: str | None) -> StorageBackend:
    from vowvault.storage.s3 import S3Backend, S3Config

    return S3Backend(replace(S3Config.from_url(url), credentials_secret=secret))


def _gcs(url: str, secret: str | None) -> StorageBackend:
    from vowvault.storage.gcs import GCSBackend, GCSConfig

    return GCSBackend(replace(GCSConfig.from_url(url), credentials_secret=secret))


def _azure(url: str, secret: str | None) -> StorageBackend:
    from vowvault.storage.azure import AzureBackend, AzureConfig

    return AzureBackend(AzureConfig.from_url(url, credentials_secret=secret))


register("file", _local)
register("s3", _s3)
register("gs", _gcs)
register("az", _azure)


def open_backend(url: str, *, retries: RetryPolicy | None = None,
                 credentials_secret: str | None = None) -> StorageBackend:
    """The backend for a target URL, wrapped (``wrap``). Credentials come from the SDK's
    standard chain, or from the named secret (``vowvault.secrets``)."""
    target = parse_target_url(url)
    return wrap(_REGISTRY[target.scheme](url, credentials_secret), retries)
