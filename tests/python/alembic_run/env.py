import os

from alembic import context
from sqlalchemy import create_engine

engine = create_engine(os.environ["AIRLOCK_TEST_DB_URL"])
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
