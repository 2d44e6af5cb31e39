"""AWS KMS as a key provider: one KMS key per KEK version.

The KEK never leaves KMS: KMS encrypts and decrypts the data key itself, under an
encryption context naming the organization, the backup and the version (so a wrapped key
moved elsewhere does not decrypt, and CloudTrail shows whose key was used for what).
Credentials, region and endpoint come from boto3's standard chain (``AWS_ENDPOINT_URL_KMS``
for emulators). Destroying a version disables the key at once and schedules its deletion
(KMS waits 7 days at least; a disabled key already decrypts nothing).

Adding GCP KMS or Azure Key Vault follows the same shape (docs/SECURITY.md): ``create``
makes a key (or key version), ``wrap``/``unwrap`` call the service's encrypt/decrypt with the
same context as additional authenticated data, ``destroy`` disables and schedules deletion.
"""

from __future__ import annotations

import uuid
from typing import Any

from vowvault.errors import KeyUnavailableError, StorageError, TransientStorageError
from vowvault.keys.base import KeyContext, KeyProvider


class AwsKms(KeyProvider):
    name = "aws-kms"

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client("kms", config=Config(retries={"total_max_attempts": 3}))
        self.kms = client

    def _call(self, what: str, fn: Any, **kw: Any) -> Any:
        import botocore.exceptions as bexc

        try:
            return fn(**kw)
        except bexc.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("DisabledException", "KMSInvalidStateException", "NotFoundException",
                        "InvalidCiphertextException", "IncorrectKeyException",
                        "AccessDeniedException"):
                raise KeyUnavailableError(f"AWS KMS refused to {what}: {code} (the key was "
                                          f"disabled, deleted, or is not this backup's)") from None
            if code in ("ThrottlingException", "KMSInternalException",
                        "DependencyTimeoutException"):
                raise TransientStorageError(f"AWS KMS {what}: {code}") from None
            raise StorageError(f"AWS KMS {what}: {code}") from None
        except (bexc.EndpointConnectionError, bexc.ConnectTimeoutError) as exc:
            raise TransientStorageError(f"AWS KMS unreachable: {exc}") from None

    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        alias = f"alias/vowvault-{org_id}-v{version}"
        try:
            found = self._call("look up a key", self.kms.describe_key, KeyId=alias)
            return str(found["KeyMetadata"]["Arn"])
        except KeyUnavailableError:
            pass
        key = self._call("create a key", self.kms.create_key,
                         Description=f"vowvault key-encryption key of {org_id} v{version}",
                         KeyUsage="ENCRYPT_DECRYPT",
                         Tags=[{"TagKey": "vowvault:organization", "TagValue": str(org_id)},
                               {"TagKey": "vowvault:version", "TagValue": str(version)}])
        arn = str(key["KeyMetadata"]["Arn"])
        self._call("name the key", self.kms.create_alias, AliasName=alias, TargetKeyId=arn)
        return arn

    def wrap(self, key_ref: str, dek: bytes, ctx: KeyContext) -> bytes:
        out = self._call("wrap a data key", self.kms.encrypt, KeyId=key_ref, Plaintext=dek,
                         EncryptionContext=ctx.encryption_context())
        return bytes(out["CiphertextBlob"])

    def unwrap(self, key_ref: str, wrapped: bytes, ctx: KeyContext) -> bytes:
        out = self._call("unwrap a data key", self.kms.decrypt, KeyId=key_ref,
                         CiphertextBlob=wrapped, EncryptionContext=ctx.encryption_context())
        return bytes(out["Plaintext"])

    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        # The bare key id: KMS takes it as well as the ARN (moto only takes the id here).
        key_id = key_ref.rsplit("/", 1)[-1]
        try:
            self._call("disable the key", self.kms.disable_key, KeyId=key_id)
            self._call("schedule the key's deletion", self.kms.schedule_key_deletion,
                       KeyId=key_id, PendingWindowInDays=7)
        except KeyUnavailableError:
            pass  # already disabled or pending deletion
