"""Make an index refuse one instance for real, by a trigger in its own database: at the
insert of the instance's row (that instance fails), or at the commit of the transaction
holding it (a deferred constraint: the whole transaction fails)."""

from __future__ import annotations

import sqlite3
import uuid

import asyncpg

_RAISE_PG = """CREATE OR REPLACE FUNCTION poisoned() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'poisoned instance %', NEW.sop_instance_uid; END $$"""


async def poison(backend: str, location: str, sop_instance_uid: str, *, at_commit: bool) -> None:
    """`backend` "sqlite" (`location` its file) or "postgres" (`location` its URL)."""
    assert all(c.isdigit() or c == "." for c in sop_instance_uid)  # inlined in the SQL
    name = f"poison_{uuid.uuid4().hex}"
    when = f"NEW.sop_instance_uid = '{sop_instance_uid}'"
    if backend == "sqlite":
        db = sqlite3.connect(location)
        try:
            if at_commit:
                # A row breaking a deferred foreign key: checked, and refused, at COMMIT.
                db.executescript(
                    f"""CREATE TABLE IF NOT EXISTS poison (patient_fk INTEGER
                            REFERENCES patient (pk) DEFERRABLE INITIALLY DEFERRED);
                        CREATE TRIGGER {name} AFTER INSERT ON instance WHEN {when}
                        BEGIN INSERT INTO poison VALUES (-1); END;"""
                )
            else:
                db.executescript(
                    f"""CREATE TRIGGER {name} BEFORE INSERT ON instance WHEN {when}
                        BEGIN SELECT RAISE(ABORT, 'poisoned instance'); END;"""
                )
        finally:
            db.close()
        return
    conn = await asyncpg.connect(location)
    try:
        await conn.execute(_RAISE_PG)
        if at_commit:
            await conn.execute(
                f"""CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON instance
                    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({when})
                    EXECUTE FUNCTION poisoned()"""
            )
        else:
            await conn.execute(
                f"""CREATE TRIGGER {name} BEFORE INSERT ON instance FOR EACH ROW
                    WHEN ({when}) EXECUTE FUNCTION poisoned()"""
            )
    finally:
        await conn.close()
