"""Alembic migrations of the broker store (run through `careid_broker.store.migrate`)."""
