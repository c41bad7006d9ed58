"""Two tables and a column: three schema changes after Alembic's own version table."""

import os

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PREFIX = os.environ["AIRLOCK_TEST_PREFIX"]


def upgrade() -> None:
    op.create_table(f"{PREFIX}_accounts", sa.Column("id", sa.Integer, primary_key=True))
    op.create_table(f"{PREFIX}_events", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column(f"{PREFIX}_accounts", sa.Column("note", sa.Text))


def downgrade() -> None:
    op.drop_table(f"{PREFIX}_events")
    op.drop_table(f"{PREFIX}_accounts")
