"""Indexes for the requests table: each sortable column then id, decided_at, users.name

Revision ID: 5b7d0e4a9c21
Revises: 865e98f2ce10
Create Date: 2026-11-24 10:00:00.000000
"""
from typing import Sequence, Union

from alembic import op


revision: str = '5b7d0e4a9c21'
down_revision: Union[str, None] = '865e98f2ce10'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.create_index('ix_access_requests_by_status', ['status', 'id'], unique=False)
        batch_op.create_index('ix_access_requests_by_requester', ['requester_id', 'id'], unique=False)
        batch_op.create_index('ix_access_requests_by_duration', ['duration_seconds', 'id'], unique=False)
        batch_op.create_index('ix_access_requests_by_updated', ['updated_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_requests_decided_at'), ['decided_at'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_name'), ['name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_name'))

    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_requests_decided_at'))
        batch_op.drop_index('ix_access_requests_by_updated')
        batch_op.drop_index('ix_access_requests_by_duration')
        batch_op.drop_index('ix_access_requests_by_requester')
        batch_op.drop_index('ix_access_requests_by_status')
