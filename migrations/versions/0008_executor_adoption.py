"""Executor heartbeats record who adopted a dead executor's workflows, when, and how many

Revision ID: 2d6b8e0f4c19
Revises: 9a4f1c7e2b60
Create Date: 2026-11-30 21:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '2d6b8e0f4c19'
down_revision: Union[str, None] = '9a4f1c7e2b60'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('executor_heartbeat') as batch:
        batch.add_column(sa.Column('adopted_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch.add_column(sa.Column('adopted_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('adopted_count', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('executor_heartbeat') as batch:
        batch.drop_column('adopted_count')
        batch.drop_column('adopted_at')
        batch.drop_column('adopted_by')
