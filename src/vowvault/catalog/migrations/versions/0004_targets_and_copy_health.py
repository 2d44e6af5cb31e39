"""repository markers per target, each copy's health, verification ages and scrubbing

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vowvault.catalog.migrations.sqlfiles import run_sql_files
from vowvault.catalog.types import TZDateTime, gen_random_uuid

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

HEALTH = "('UNCHECKED', 'INTACT', 'DAMAGED', 'MISSING', 'UNREACHABLE')"


def upgrade() -> None:
    op.create_table(
        'storage_targets',
        sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('marker_id', sa.Uuid(), nullable=False),
        sa.Column('format_version', sa.Integer(), server_default='1', nullable=False),
        sa.Column('checked_at', TZDateTime(), nullable=True),
        sa.Column('available', sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column('problem', sa.Text(), nullable=True),
        sa.Column('created_at', TZDateTime(), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_storage_targets')),
        sa.UniqueConstraint('url', name=op.f('uq_storage_targets_url')))
    with op.batch_alter_table('backup_storage') as batch:
        batch.add_column(sa.Column('health', sa.String(32), server_default='UNCHECKED',
                                   nullable=False))
        batch.add_column(sa.Column('checked_at', TZDateTime(), nullable=True))
        batch.add_column(sa.Column('problem', sa.Text(), nullable=True))
        batch.create_check_constraint(op.f('ck_backup_storage_copy_health'),
                                      f'health IN {HEALTH}')
        batch.create_index('idx_backup_storage_checked', ['storage_url', 'checked_at'])
    # What verification already proved is kept. A copy an earlier vowvault marked FAILED
    # after reading it back wrong still holds its objects: it becomes DAMAGED (and is
    # checked again by the next verify or scrub) instead of being taken for gone.
    op.execute("UPDATE backup_storage SET health = 'INTACT', checked_at = verified_at "
               "WHERE status = 'VERIFIED'")
    op.execute("UPDATE backup_storage SET status = 'STORED', health = 'DAMAGED', "
               "checked_at = verified_at, problem = 'read back wrong (before migration 0004)' "
               "WHERE status = 'FAILED' AND verified_at IS NOT NULL")
    with op.batch_alter_table('backup_policies') as batch:
        batch.add_column(sa.Column('verify_max_age_days', sa.Integer(), server_default='45',
                                   nullable=False))
        batch.add_column(sa.Column('scrub_cycle_days', sa.Integer(), server_default='30',
                                   nullable=False))
        batch.add_column(sa.Column('scrub_archived', sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
        batch.create_check_constraint(
            op.f('ck_backup_policies_verification_ranges'),
            'verify_max_age_days BETWEEN 1 AND 3660 AND scrub_cycle_days '
            'BETWEEN 1 AND verify_max_age_days')
    run_sql_files(revision, "upgrade")


def downgrade() -> None:
    run_sql_files(revision, "downgrade")
    with op.batch_alter_table('backup_policies') as batch:
        batch.drop_constraint(op.f('ck_backup_policies_verification_ranges'), type_='check')
        batch.drop_column('scrub_archived')
        batch.drop_column('scrub_cycle_days')
        batch.drop_column('verify_max_age_days')
    op.execute("UPDATE backup_storage SET status = 'FAILED' WHERE health = 'DAMAGED' "
               "AND status IN ('STORED', 'VERIFIED')")
    with op.batch_alter_table('backup_storage') as batch:
        batch.drop_index('idx_backup_storage_checked')
        batch.drop_constraint(op.f('ck_backup_storage_copy_health'), type_='check')
        batch.drop_column('problem')
        batch.drop_column('checked_at')
        batch.drop_column('health')
    op.drop_table('storage_targets')
