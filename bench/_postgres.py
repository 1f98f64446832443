"""
A private, durable PostgreSQL with the quarantine's schema, for the
benchmarks that measure the PostgreSQL store (bench/quarantine.py,
bench/console.py): started in a temporary directory, removed after.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from popproxy._pgschema import migrate
from popproxy._pgstore import PostgresStore, openConnection
from popproxy._quarantineaddress import DatabaseAddress
from tests.peers.postgres import PostgresServer


@contextmanager
def migratedPostgres(
    prefix: str, maxConnections: int
) -> Iterator[tuple[PostgresServer, PostgresStore, Path]]:
    """
    The server, a store on it with C{maxConnections} connections, and
    its temporary directory (free for other files), for a C{with} block.
    """
    temporary = Path(tempfile.mkdtemp(prefix=prefix))
    server = PostgresServer(temporary, durable=True)
    server.initialize()
    server.start()
    try:
        address = DatabaseAddress(server.url())
        with openConnection(address, check=False) as connection:
            migrate(connection)
        store = PostgresStore(address, maxConnections=maxConnections)
        try:
            yield server, store, temporary
        finally:
            store.close()
    finally:
        server.stop()
        shutil.rmtree(temporary, ignore_errors=True)
