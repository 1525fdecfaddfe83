"""Sign-in through an OpenID Connect provider: who the provider says each person is
(users.oidc_subject), and the sign-ins under way (oidc_logins, one row per state)

Revision ID: 9a4d6e2b7c15
Revises: 5c2e8a7d1f93
Create Date: 2026-12-02 06:00:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '9a4d6e2b7c15'
down_revision: Union[str, None] = '5c2e8a7d1f93'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('oidc_subject', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=True))
        batch.create_unique_constraint('uq_users_oidc_subject', ['oidc_subject'])
    op.create_table(
        'oidc_logins',
        sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('code_verifier', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('next_url', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('state'),
    )
    op.create_index('ix_oidc_logins_created_at', 'oidc_logins', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_oidc_logins_created_at', table_name='oidc_logins')
    op.drop_table('oidc_logins')
    with op.batch_alter_table('users') as batch:
        batch.drop_constraint('uq_users_oidc_subject', type_='unique')
        batch.drop_column('oidc_subject')
