"""Audit events name the access request they concern, so a live-feed replay filters in SQL

Revision ID: 7c2e9d4b1a38
Revises: 3e8a6c1f5d72
Create Date: 2026-11-30 19:30:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '7c2e9d4b1a38'
down_revision: Union[str, None] = '3e8a6c1f5d72'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events') as batch:
        batch.add_column(sa.Column('request_id', sa.Integer(), nullable=True))
        batch.create_index('ix_audit_events_request_id_id', ['request_id', 'id'], unique=False)
    # Rows written before: the request from the subject, directly or through the grant.
    op.execute("UPDATE audit_events SET request_id = CAST(substr(subject, 9) AS INTEGER) "
               "WHERE subject LIKE 'request:%'")
    op.execute("UPDATE audit_events SET request_id = (SELECT grants.request_id FROM grants "
               "WHERE 'grant:' || CAST(grants.id AS VARCHAR) = audit_events.subject) WHERE subject LIKE 'grant:%'")


def downgrade() -> None:
    with op.batch_alter_table('audit_events') as batch:
        batch.drop_index('ix_audit_events_request_id_id')
        batch.drop_column('request_id')
