"""The audit key: what chains the audit log (``catalog.audit``), never in the catalog.

It comes from the service configuration's ``audit_key`` (a secret reference: a Prefect
Secret block, ``env:`` or ``file:``; what every worker of a fleet shares), or else from a
key file of this host, ``$VOWVAULT_HOME/audit.key`` (made on first use, mode 0600; back it
up with the KEKs).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vowvault.errors import ConfigError

KEY_BYTES = 32


def load_audit_key(home: Path, ref: str | None) -> bytes:
    if ref:
        from vowvault.secrets import resolve

        value = resolve(ref)
        if len(value) < 16:
            raise ConfigError(f"the audit key {ref} is shorter than 16 characters; use a "
                              f"long random value")
        return hashlib.sha256(b"vowvault-audit-key\0" + value.encode()).digest()
    path = home / "audit.key"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return load_audit_key(home, ref)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key {path}: {exc.strerror}") from None
    if len(data) != KEY_BYTES:
        raise ConfigError(f"the audit key {path} holds {len(data)} bytes, not {KEY_BYTES}")
    return data
