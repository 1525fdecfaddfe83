"""Bulk import: jobs, chunks and imported people

Revision ID: 865e98f2ce10
Revises: bff847bdc463
Create Date: 2026-11-23 21:05:35.251848
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '865e98f2ce10'
down_revision: Union[str, None] = 'bff847bdc463'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('import_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('source_kind', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('seed', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('nat', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('chunk_size', sa.Integer(), nullable=False),
    sa.Column('page_size', sa.Integer(), nullable=False),
    sa.Column('create_users', sa.Boolean(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('run', sa.Integer(), nullable=False),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('imported', sa.Integer(), nullable=False),
    sa.Column('invalid', sa.Integer(), nullable=False),
    sa.Column('chunks_total', sa.Integer(), nullable=False),
    sa.Column('chunks_done', sa.Integer(), nullable=False),
    sa.Column('chunks_failed', sa.Integer(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('import_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_import_jobs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_import_jobs_workflow_id'), ['workflow_id'], unique=False)

    op.create_table('import_chunks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('page', sa.Integer(), nullable=False),
    sa.Column('page_offset', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('imported', sa.Integer(), nullable=False),
    sa.Column('invalid', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['import_jobs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'number', name='uq_import_chunks_job_number')
    )
    with op.batch_alter_table('import_chunks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_chunks_job_id'), ['job_id'], unique=False)

    op.create_table('imported_people',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('login_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('gender', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('name_title', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('name_first', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('name_last', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('street_number', sa.Integer(), nullable=True),
    sa.Column('street_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('city', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('country', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('postcode', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('latitude', sa.Float(), nullable=False),
    sa.Column('longitude', sa.Float(), nullable=False),
    sa.Column('timezone_offset', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('timezone_description', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('login_username', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('login_password', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('login_salt', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('login_md5', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('login_sha1', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('login_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('dob_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dob_age', sa.Integer(), nullable=False),
    sa.Column('registered_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('registered_age', sa.Integer(), nullable=False),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('cell', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('id_name', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('id_value', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('picture_large', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('picture_medium', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('picture_thumbnail', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('nat', sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('import_job_id', sa.Integer(), nullable=True),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['import_job_id'], ['import_jobs.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('login_uuid')
    )
    with op.batch_alter_table('imported_people', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imported_people_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_imported_people_import_job_id'), ['import_job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_imported_people_nat'), ['nat'], unique=False)
        batch_op.create_index(batch_op.f('ix_imported_people_user_id'), ['user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('imported_people', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_imported_people_user_id'))
        batch_op.drop_index(batch_op.f('ix_imported_people_nat'))
        batch_op.drop_index(batch_op.f('ix_imported_people_import_job_id'))
        batch_op.drop_index(batch_op.f('ix_imported_people_email'))

    op.drop_table('imported_people')
    with op.batch_alter_table('import_chunks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_import_chunks_job_id'))

    op.drop_table('import_chunks')
    with op.batch_alter_table('import_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_import_jobs_workflow_id'))
        batch_op.drop_index(batch_op.f('ix_import_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_import_jobs_created_at'))

    op.drop_table('import_jobs')
