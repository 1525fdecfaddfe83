"""Drift findings: members of a target with no grant, and grants with no membership

Revision ID: 8e3b6f2a9d41
Revises: 5c1e9a7d3b20
Create Date: 2026-11-30 22:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '8e3b6f2a9d41'
down_revision: Union[str, None] = '5c1e9a7d3b20'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'drift_findings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('resource_id', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('member', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('found_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('corrected', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id']),
        sa.ForeignKeyConstraint(['resource_id'], ['resources.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_drift_findings_agent_id', 'drift_findings', ['agent_id'], unique=False)
    op.create_index('ix_drift_findings_resource_id', 'drift_findings', ['resource_id'], unique=False)


def downgrade() -> None:
    op.drop_table('drift_findings')
