"""Executor heartbeats: one row per app process, for the ops console's executors page

Revision ID: 3e8a6c1f5d72
Revises: 5b7d0e4a9c21
Create Date: 2026-11-25 10:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '3e8a6c1f5d72'
down_revision: Union[str, None] = '5b7d0e4a9c21'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('executor_heartbeat',
    sa.Column('executor_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('app_version', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('executor_id')
    )


def downgrade() -> None:
    op.drop_table('executor_heartbeat')
