"""leases: who runs a backup or a restore, until when (in the catalog server's clock)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vowvault.catalog.types import TZDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('backup_jobs') as batch:
        batch.add_column(sa.Column('owner_token', sa.String(64), nullable=True))
        batch.add_column(sa.Column('lease_expires_at', TZDateTime(), nullable=True))
    with op.batch_alter_table('recovery_jobs') as batch:
        batch.add_column(sa.Column('worker_host', sa.String(255), nullable=True))
        batch.add_column(sa.Column('worker_pid', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('owner_token', sa.String(64), nullable=True))
        batch.add_column(sa.Column('heartbeat_at', TZDateTime(), nullable=True))
        batch.add_column(sa.Column('lease_expires_at', TZDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recovery_jobs') as batch:
        for column in ('lease_expires_at', 'heartbeat_at', 'owner_token', 'worker_pid',
                       'worker_host'):
            batch.drop_column(column)
    with op.batch_alter_table('backup_jobs') as batch:
        batch.drop_column('lease_expires_at')
        batch.drop_column('owner_token')
