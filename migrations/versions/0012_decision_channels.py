"""Where each decision came from (audit_events.channel: web, api, slack, email), and the
emailed decision links that have been used (each works once)

Revision ID: 5c2e8a7d1f93
Revises: 3f7a1c9e5b62
Create Date: 2026-12-02 05:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '5c2e8a7d1f93'
down_revision: Union[str, None] = '3f7a1c9e5b62'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events') as batch:
        batch.add_column(sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    # Rows written before: a token names the API; a person without one used the web.
    op.execute("UPDATE audit_events SET channel = 'api' WHERE token_id IS NOT NULL")
    op.execute("UPDATE audit_events SET channel = 'web' WHERE token_id IS NULL AND actor_id IS NOT NULL")
    op.create_table(
        'decision_link_uses',
        sa.Column('link_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('decision', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['request_id'], ['access_requests.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('link_id'),
    )
    op.create_index('ix_decision_link_uses_request_id', 'decision_link_uses', ['request_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_decision_link_uses_request_id', table_name='decision_link_uses')
    op.drop_table('decision_link_uses')
    with op.batch_alter_table('audit_events') as batch:
        batch.drop_column('channel')
