"""webhook delivery attempts and escalation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_deliveries') as batch:
        batch.add_column(sa.Column('attempt_log', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch.add_column(sa.Column('escalation', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('webhook_endpoints') as batch:
        batch.create_unique_constraint(op.f('uq_webhook_endpoints_organization_id_url'), ['organization_id', 'url'])


def downgrade() -> None:
    with op.batch_alter_table('webhook_endpoints') as batch:
        batch.drop_constraint(op.f('uq_webhook_endpoints_organization_id_url'), type_='unique')
    with op.batch_alter_table('webhook_deliveries') as batch:
        batch.drop_column('escalation')
        batch.drop_column('attempt_log')
