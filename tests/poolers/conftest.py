"""Every process a test starts (workers, beat, the guardians' worker) reaches
PostgreSQL through a PgBouncer of the test's own, in transaction mode, with
the settings README "PgBouncer" gives (DATABASE_TRANSACTION_POOLER=true)."""

import pytest
from django.db import connection

import tests.conftest
from tests.faults.services import PgBouncer

# The recovery tests run here too, with the real beat and guardians' worker.
from tests.workers_app.conftest import guardian_beat  # noqa: F401


@pytest.fixture(autouse=True)
def through_pgbouncer(tmp_path, monkeypatch, transactional_db):
    bouncer = PgBouncer(tmp_path / "pgbouncer")
    database = connection.settings_dict["NAME"]
    monkeypatch.setattr(tests.conftest, "_database_url", lambda: bouncer.url(database))
    monkeypatch.setenv("DATABASE_TRANSACTION_POOLER", "true")
    yield bouncer
    # Proof the processes' statements went through the pooler, not around it.
    stats = bouncer.stats(database)
    # Stopped before the suite drops the test database: it holds server connections.
    bouncer.stop()
    assert stats.get("total_xact_count", 0) > 0, bouncer.log()
