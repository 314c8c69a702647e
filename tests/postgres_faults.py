"""Real PostgreSQL errors on demand: a trigger makes the server itself abort inserts, with the SQLSTATE
a test chooses (a deadlock, a serialization failure...), so retries are tested against the real driver
and SQLAlchemy's wrapping of what it raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import text

from stagewatch.store.engine import Database


@contextmanager
def events_insert_fails(db: Database, times: int, sqlstate: str = "40P01") -> Iterator[Callable[[], int]]:
    """PostgreSQL itself raises ``sqlstate`` on the first ``times`` inserts into events. Yields a function
    that tells how many inserts were tried (a sequence counts them: unlike a table, it is not rolled back
    with the failed transaction)."""
    with db.writer.begin() as conn:
        conn.execute(text("CREATE SEQUENCE sw_test_inserts"))
        conn.execute(
            text(
                "CREATE FUNCTION sw_test_abort() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF nextval('sw_test_inserts') <= {times} THEN "
                f"RAISE EXCEPTION 'aborted by the test' USING ERRCODE = '{sqlstate}'; END IF; "
                "RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER sw_test_abort BEFORE INSERT ON events "
                "FOR EACH STATEMENT EXECUTE FUNCTION sw_test_abort()"
            )
        )

    def tried() -> int:
        with db.reader.connect() as conn:
            return int(conn.execute(text("SELECT last_value FROM sw_test_inserts")).scalar_one())

    try:
        yield tried
    finally:
        with db.writer.begin() as conn:
            conn.execute(text("DROP TRIGGER sw_test_abort ON events"))
            conn.execute(text("DROP FUNCTION sw_test_abort()"))
            conn.execute(text("DROP SEQUENCE sw_test_inserts"))
