"""incremental and differential chains restart with a full backup every N days

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('backup_policies') as batch:
        batch.add_column(sa.Column('full_every_days', sa.Integer(), server_default='7',
                                   nullable=False))
        batch.create_check_constraint(op.f('ck_backup_policies_full_every_days_range'),
                                      'full_every_days BETWEEN 1 AND 366')


def downgrade() -> None:
    with op.batch_alter_table('backup_policies') as batch:
        batch.drop_constraint(op.f('ck_backup_policies_full_every_days_range'), type_='check')
        batch.drop_column('full_every_days')
