"""What the service lets each organization point it at: the operator's word, never a row.

On PostgreSQL, tenants write their own policies' rows (through the gateway, under row-level
security), so nothing in those rows may decide where the service reads, writes, deletes,
connects or which secret it resolves. The service configuration (``VOWVAULT_SERVICE_CONFIG``,
or ``$VOWVAULT_HOME/service.yaml``) says, per organization, which directories a source may
be under, which database hosts it may connect to, which storage URLs belong to it, and which
secret names its policies may use; and where webhooks may go. When the file declares
``organizations``, every one of those is checked where it is used (a policy row changed
after it was applied is caught at run time), and refusals are recorded in the audit log.
Without it (the
embedded default: one operator, one policy file) the policies are trusted as they are;
``vowvault doctor`` fails on a PostgreSQL catalog where that is so.

Webhooks are always checked: they go only to http(s) hosts whose address is not loopback,
private, link-local, multicast or reserved (cloud metadata included), checked on the
address the connection is made to, unless ``webhooks.allow_private`` or ``allow_hosts``
says otherwise.

Example::

    version: 1
    tenant_gateway_roles: [vowvault_gateway]
    audit_key: prefect:vowvault-audit-key
    webhooks: {allow_private: false, allow_hosts: []}
    organizations:
      lumiere:
        directories: [/srv/photos/lumiere]
        database_hosts: []
        storage: ["s3://vowvault-backups/lumiere", "file:///var/backups/vowvault"]
        secrets: ["env:LUMIERE_*", "prefect:lumiere-*"]
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vowvault.errors import BoundaryError, ConfigError, PolicyError

MAX_BYTES = 1 << 20
_DSN_KEYS = {"host", "hostaddr", "port", "dbname", "user", "sslmode", "application_name",
             "connect_timeout", "options", "target_session_attrs", "gssencmode",
             "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}
"""Connection parameters a tenant's DSN may carry: none of them names a file the worker
would read (``passfile``, ``sslkey``, ``sslcert``, ``sslrootcert``, ``service`` do)."""


_STRICT = {"extra": "forbid"}
"""pydantic's configuration of the rules below (a plain dict: no pydantic import here)."""


@dataclass(frozen=True)
class OrgRules:
    """What one organization's policies may name (glob patterns)."""

    __pydantic_config__ = _STRICT
    directories: list[str] = field(default_factory=list)
    database_hosts: list[str] = field(default_factory=list)
    storage: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WebhookRules:
    __pydantic_config__ = _STRICT
    allow_private: bool = False
    allow_hosts: list[str] = field(default_factory=list)


@functools.cache
def _file_model() -> Any:
    """The file's schema (pydantic, validating the dataclasses above), built on first use:
    a command without a service file never imports pydantic or YAML (about 0.1 s)."""
    from pydantic import BaseModel, ConfigDict, Field

    class _File(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        version: int = 1
        audit_key: str | None = None
        tenant_gateway_roles: list[str] = Field(default_factory=list)
        webhooks: WebhookRules = Field(default_factory=WebhookRules)
        organizations: dict[str, OrgRules] = Field(default_factory=dict)

    return _File


@dataclass(frozen=True)
class ServiceConfig:
    path: Path | None = None
    """The file it came from; None: no file, policies trusted (webhooks still checked)."""
    organizations: dict[str, OrgRules] = field(default_factory=dict)
    webhooks: WebhookRules = field(default_factory=WebhookRules)
    tenant_gateway_roles: tuple[str, ...] = ()
    audit_key: str | None = None
    """A secret reference to the key the audit chain is kept with (``engine.auditkey``)."""

    tenants: bool = False
    """The file declares ``organizations``: every organization's policies are held to
    them (one not listed may point at nothing). A file with only ``webhooks`` leaves the
    policies trusted."""

    @property
    def enforced(self) -> bool:
        return self.path is not None and self.tenants

    def _rules(self, org: str) -> OrgRules:
        rules = self.organizations.get(org)
        if rules is None:
            raise BoundaryError(f"organization {org!r} is not in the service configuration "
                                f"{self.path}: nothing is allowed for it; an operator adds it")
        return rules

    def _refuse(self, org: str, what: str, allowed: list[str]) -> BoundaryError:
        return BoundaryError(f"{what} is not allowed for organization {org!r} (allowed: "
                             f"{', '.join(allowed) or 'nothing'}); an operator changes that "
                             f"in {self.path}")

    # -- sources --------------------------------------------------------------------------

    def check_directory(self, org: str, path: str) -> str | None:
        """The allowed directory (its real path) a directory source lies under, once its
        own path is resolved; None when nothing is enforced. The walk checks the directory
        it opens against it again (a symlink swapped in meanwhile)."""
        if not self.enforced:
            return None
        real = Path(os.path.realpath(path))
        rules = self._rules(org)
        for root in rules.directories:
            base = Path(os.path.realpath(root))
            if real == base or base in real.parents:
                return str(base)
        raise self._refuse(org, f"source directory {path}"
                           + (f" (really {real})" if str(real) != path.rstrip("/") else ""),
                           rules.directories)

    def check_source(self, org: str, source: dict[str, Any]) -> str | None:
        """A policy's source section: where it reads and which secret it names. Returns
        the directory a directory source must stay under (see ``check_directory``)."""
        if not self.enforced:
            return None
        if source.get("password_env"):
            self.check_secret(org, f"env:{source['password_env']}")
        if source.get("password_secret"):
            self.check_secret(org, str(source["password_secret"]))
        if source.get("kind") == "directory":
            return self.check_directory(org, str(source.get("path") or ""))
        if source.get("kind") == "postgres":
            self.check_database(org, str(source.get("dsn") or ""))
            return None
        raise BoundaryError(f"a source of kind {source.get('kind')!r} is not allowed")

    def check_database(self, org: str, dsn: str) -> None:
        if not self.enforced:
            return
        from psycopg.conninfo import conninfo_to_dict

        rules = self._rules(org)
        try:
            params = conninfo_to_dict(dsn)
        except Exception:  # psycopg's ProgrammingError family
            raise BoundaryError("the source's dsn is not a libpq connection string") from None
        extra = sorted(set(params) - _DSN_KEYS)
        if extra:
            raise BoundaryError(f"the source's dsn sets {', '.join(extra)}, which is not "
                                f"allowed in a policy (it names files the service would read)")
        hosts = str(params.get("hostaddr") or params.get("host") or "").split(",")
        ports = str(params.get("port") or "5432").split(",")
        for i, host in enumerate(hosts):
            port = ports[i] if i < len(ports) else ports[-1]
            if not host:
                raise self._refuse(org, "a database on the local socket (no host)",
                                   rules.database_hosts)
            if host not in rules.database_hosts and f"{host}:{port}" not in \
                    rules.database_hosts:
                raise self._refuse(org, f"database host {host}:{port}", rules.database_hosts)

    # -- storage and secrets --------------------------------------------------------------

    def check_storage(self, org: str, url: str) -> None:
        if not self.enforced:
            return
        rules = self._rules(org)
        if not any(_under(url, allowed) for allowed in rules.storage):
            raise self._refuse(org, f"storage {url}", rules.storage)

    def allows_storage(self, org: str, url: str) -> bool:
        try:
            self.check_storage(org, url)
        except BoundaryError:
            return False
        return True

    def check_secret(self, org: str, ref: str) -> None:
        if not self.enforced:
            return
        rules = self._rules(org)
        name = ref if ":" in ref else f"prefect:{ref}"
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in rules.secrets):
            raise self._refuse(org, f"secret {ref!r}", rules.secrets)

    # -- webhooks -------------------------------------------------------------------------

    def webhook_address(self, url: str) -> tuple[str, int]:
        """The (address, port) a webhook to ``url`` may connect to: its host resolved once,
        and the first address refused if it is internal (unless allowed). The caller
        connects to that address, so a DNS answer that changes meanwhile cannot redirect
        it."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BoundaryError(f"webhook {url!r}: only http(s) URLs with a host")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(f"webhook host {host}: {exc.strerror}") from None
        address = str(infos[0][4][0])
        if self.webhooks.allow_private or host in self.webhooks.allow_hosts or \
                address in self.webhooks.allow_hosts:
            return address, port
        ip = ipaddress.ip_address(address)
        if _internal(ip):
            raise BoundaryError(f"webhook {url!r} resolves to {address}, an internal address "
                                f"(loopback, private, link-local or metadata): not delivered; "
                                f"an operator allows it with webhooks.allow_hosts")
        return address, port


def check_policy_file(rules: ServiceConfig, file: Any) -> None:
    """A policy file against the rules, before it is applied: the first policy or endpoint
    that points where its organization may not, in one line (``PolicyError``)."""
    if not rules.enforced:
        return
    for org in file.organizations:
        for hook in org.webhooks:
            try:
                rules.check_secret(org.slug, hook.secret)
            except BoundaryError as exc:
                raise PolicyError(str(exc), field=f"organization {org.slug}: webhooks"
                                  ) from None
    for policy in file.policies:
        try:
            rules.check_source(policy.organization, policy.source.model_dump())
            for target in policy.storage:
                rules.check_storage(policy.organization, target.url)
                if target.credentials_secret:
                    rules.check_secret(policy.organization, target.credentials_secret)
        except BoundaryError as exc:
            raise PolicyError(str(exc), policy=policy.name) from None


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or
            ip.is_reserved or ip.is_unspecified or
            ip in ipaddress.ip_network("100.64.0.0/10"))  # carrier-grade NAT


def _under(url: str, allowed: str) -> bool:
    """``url`` is ``allowed`` or below it (whole path components), with nothing like ``..``
    that could climb out."""
    url, allowed = url.rstrip("/"), allowed.rstrip("/")
    if any(part in ("..", ".") for part in url.split("://", 1)[-1].split("/")):
        return False
    return url == allowed or url.startswith(allowed + "/")


def _path(home: Path) -> Path | None:
    explicit = os.environ.get("VOWVAULT_SERVICE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    candidate = home / "service.yaml"
    return candidate if candidate.exists() else None


def load_service_config(home: Path, path: Path | None = None) -> ServiceConfig:
    """The operator's service configuration, or the trusting default when there is none."""
    path = path or _path(home)
    if path is None:
        return ServiceConfig()
    import yaml
    from pydantic import ValidationError

    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"service configuration {path} is larger than 1 MiB")
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"service configuration {path} does not exist (unset "
                          f"VOWVAULT_SERVICE_CONFIG or create it)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"service configuration {path} is not a UTF-8 text file (byte "
                          f"{exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the service configuration {path}: "
                          f"{exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"service configuration {path}"
                          + (f":{mark.line + 1}" if mark else "")
                          + f" is not valid YAML: {problem}") from None
    try:
        parsed = _file_model().model_validate(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        # an unknown key of the rules (dataclasses) reads as one of the file (a model)
        msg = "Extra inputs are not permitted" if err["type"] == "unexpected_keyword_argument" \
            else err["msg"]
        raise ConfigError(f"service configuration {path}: {where}: {msg}") from None
    return ServiceConfig(path=path,
                         organizations=dict(parsed.organizations),
                         webhooks=parsed.webhooks,
                         tenants=isinstance(data, dict) and "organizations" in data,
                         tenant_gateway_roles=tuple(parsed.tenant_gateway_roles),
                         audit_key=parsed.audit_key)
