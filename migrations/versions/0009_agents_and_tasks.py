"""Agents, fulfilment tasks, and where each grant stands in its target system

Revision ID: 5c1e9a7d3b20
Revises: 2d6b8e0f4c19
Create Date: 2026-11-30 21:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '5c1e9a7d3b20'
down_revision: Union[str, None] = '2d6b8e0f4c19'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'agents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('settings', sa.JSON(), nullable=False),
        sa.Column('concurrency', sa.Integer(), nullable=False),
        sa.Column('rate_limit', sa.Integer(), nullable=False),
        sa.Column('rate_period_seconds', sa.Float(), nullable=False),
        sa.Column('drift_interval_seconds', sa.Integer(), nullable=False),
        sa.Column('healthy', sa.Boolean(), nullable=True),
        sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('drift_checked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('drift_found', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    with op.batch_alter_table('resources') as batch:
        batch.add_column(sa.Column('agent_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False,
                                   server_default=''))
        batch.add_column(sa.Column('drift_policy', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                   server_default='report'))
        batch.create_index('ix_resources_agent_id', ['agent_id'], unique=False)
        batch.create_foreign_key('fk_resources_agent_id_agents', 'agents', ['agent_id'], ['id'])
    with op.batch_alter_table('grants') as batch:
        batch.add_column(sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                   server_default='active'))
        batch.create_index('ix_grants_state', ['state'], unique=False)
    # A grant that ended before agents existed was only ever a row: it is removed.
    op.execute("UPDATE grants SET state = 'removed' WHERE revoked_at IS NOT NULL")
    op.create_table(
        'fulfilment_tasks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('grant_id', sa.Integer(), nullable=False),
        sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('resource_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('resolved_by_id', sa.Integer(), nullable=True),
        sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id']),
        sa.ForeignKeyConstraint(['grant_id'], ['grants.id']),
        sa.ForeignKeyConstraint(['resolved_by_id'], ['users.id']),
        sa.ForeignKeyConstraint(['resource_id'], ['resources.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('workflow_id'),
    )
    for column in ('agent_id', 'created_at', 'grant_id', 'resource_id', 'user_id'):
        op.create_index(f'ix_fulfilment_tasks_{column}', 'fulfilment_tasks', [column], unique=False)
    op.create_index('ix_fulfilment_tasks_status_id', 'fulfilment_tasks', ['status', 'id'], unique=False)


def downgrade() -> None:
    op.drop_table('fulfilment_tasks')
    with op.batch_alter_table('grants') as batch:
        batch.drop_index('ix_grants_state')
        batch.drop_column('state')
    with op.batch_alter_table('resources') as batch:
        batch.drop_constraint('fk_resources_agent_id_agents', type_='foreignkey')
        batch.drop_index('ix_resources_agent_id')
        batch.drop_column('drift_policy')
        batch.drop_column('target')
        batch.drop_column('agent_id')
    op.drop_table('agents')
