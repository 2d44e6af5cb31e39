"""The Prefect Secret key provider on a real Prefect API: backups sealed under a KEK kept in
a Secret block; destroying the block makes them unreadable."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_prefect_secret_keys(prefect_api, vv_home: Path, tmp_path: Path) -> None:
    from policytext import apply_photos_policy

    from blocks import register
    from tasks.common import context
    from vowvault.catalog.db import Catalog
    from vowvault.engine import keyring
    from vowvault.engine.backup import run_backup
    from vowvault.engine.restore import restore_backup
    from vowvault.errors import RestoreError
    from vowvault.settings import load_settings

    register()
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_text("I do")
    catalog = Catalog.open(load_settings())
    apply_photos_policy(catalog, src, f"file://{tmp_path}/storage",
                        extra=["encryption: {key_provider: prefect-secret}"])
    catalog.dispose()
    ctx = context()
    first = run_backup(ctx, "photos")
    assert not (vv_home / "keys").exists()  # nothing on local disk
    assert keyring.rotate(ctx, "lumiere")["rewrapped"] == 1
    restore_backup(ctx, first.job_id, to_dir=tmp_path / "out")
    assert (tmp_path / "out" / "vows.txt").read_text() == "I do"
    keyring.shred(ctx, "lumiere", "lumiere")
    from prefect.blocks.system import Secret

    for v in (1, 2):
        with pytest.raises(ValueError):
            Secret.load(f"vowvault-kek-{ctx_org_id(ctx)}-v{v}")
    with pytest.raises(RestoreError, match="crypto-shredded"):
        restore_backup(ctx, first.job_id, to_dir=tmp_path / "out2")


def ctx_org_id(ctx) -> str:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from vowvault.catalog.models import Organization

    with ctx.catalog.session() as s:
        return str(s.execute(sa.select(Organization.id)).scalar_one())
