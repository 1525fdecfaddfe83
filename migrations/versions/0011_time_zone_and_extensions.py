"""A person's time zone, for the times the pages show (empty: their browser's, else UTC); and
extension requests, which move the end of a grant the requester holds

Revision ID: 3f7a1c9e5b62
Revises: 8e3b6f2a9d41
Create Date: 2026-12-01 04:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '3f7a1c9e5b62'
down_revision: Union[str, None] = '8e3b6f2a9d41'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('time_zone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False,
                                   server_default=''))
    with op.batch_alter_table('access_requests') as batch:
        batch.add_column(sa.Column('extends_grant_id', sa.Integer(), nullable=True))
    op.create_index('ix_access_requests_extends_grant_id', 'access_requests', ['extends_grant_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_access_requests_extends_grant_id', table_name='access_requests')
    with op.batch_alter_table('access_requests') as batch:
        batch.drop_column('extends_grant_id')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('time_zone')
