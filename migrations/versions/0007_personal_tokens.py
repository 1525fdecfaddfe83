"""Tokens are personal, expire and carry scopes; audit rows name the token; service accounts

Revision ID: 9a4f1c7e2b60
Revises: 7c2e9d4b1a38
Create Date: 2026-11-30 20:00:00.000000

Tokens made before: they expire 90 days from this migration (the scripts using them keep
working until then), keep every scope (their person's role still limits them), and those an
admin minted for someone else are revoked, since that is how an admin could act as an approver.
"""
from datetime import UTC, datetime, timedelta
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '9a4f1c7e2b60'
down_revision: Union[str, None] = '7c2e9d4b1a38'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('is_service', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('scopes', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False,
                                   server_default='read,decide,operate'))
    with op.batch_alter_table('audit_events') as batch:
        batch.add_column(sa.Column('token_id', sa.Integer(), nullable=True))

    bind = op.get_bind()
    now = datetime.now(UTC)
    if bind.dialect.name == 'sqlite':
        now = now.replace(tzinfo=None)
    tokens = sa.table('api_tokens', sa.column('expires_at', sa.DateTime(timezone=True)),
                      sa.column('revoked_at', sa.DateTime(timezone=True)), sa.column('user_id', sa.Integer()),
                      sa.column('created_by_id', sa.Integer()))
    bind.execute(tokens.update().where(tokens.c.expires_at.is_(None)).values(expires_at=now + timedelta(days=90)))
    bind.execute(tokens.update().where(tokens.c.revoked_at.is_(None), tokens.c.created_by_id.is_not(None),
                                       tokens.c.created_by_id != tokens.c.user_id).values(revoked_at=now))
    with op.batch_alter_table('api_tokens') as batch:
        batch.alter_column('expires_at', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_events') as batch:
        batch.drop_column('token_id')
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('scopes')
        batch.drop_column('expires_at')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('is_service')
