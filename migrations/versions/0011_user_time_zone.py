"""A person's time zone, for the times the pages show (empty: their browser's, else UTC)

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


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('time_zone')
