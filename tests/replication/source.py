"""The benchmark's ``orders`` table (the shape and generator of the bench's make_source.py, seed 42) in each kind of
source, and its 1% change (updates with a newer ``updated_at``, inserts, deletes) in each dialect.

Sources are written with the plain drivers, not with the connectors under test.
"""

from __future__ import annotations

import csv
import datetime
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

DDL = ("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(32) NOT NULL, status VARCHAR(16), "
       "amount NUMERIC(12,2), quantity INTEGER, priority BOOLEAN, created_at TIMESTAMP, updated_at TIMESTAMP, "
       "note TEXT, region VARCHAR(8))")
COLUMNS = ["id", "customer", "status", "amount", "quantity", "priority", "created_at", "updated_at", "note", "region"]
BASE = datetime.datetime(2024, 1, 1)
UPDATED_BASE, INSERTED_BASE = datetime.datetime(2030, 1, 1), datetime.datetime(2030, 1, 2)
INSERT_OFFSET = 2_000_000


def rows(n: int, first: int = 1) -> Iterator[tuple]:
    """Rows ``first``..``n`` exactly as make_source.py makes them (the generator is replayed from row 1)."""
    rng = random.Random(42)
    for i in range(1, n + 1):
        row = (i, f"customer-{rng.randrange(100000):06d}", rng.choice(["new", "paid", "shipped", "returned"]),
               round(rng.uniform(1, 5000), 2), rng.randrange(1, 50), rng.random() < 0.3,
               BASE + datetime.timedelta(seconds=i * 7), BASE + datetime.timedelta(seconds=i * 9),
               f"note {i} " + "x" * rng.randrange(0, 60), rng.choice([None, "EU", "US", "APAC"]))
        if i >= first:
            yield row


def change_counts(n: int, inserts: int | None = None) -> tuple[int, int, int]:
    """(updated, inserted, deleted) by ``change`` on a table of ``n`` rows."""
    inserts = n // 200 if inserts is None else inserts
    return len(range(7, n + 1, 100)), inserts, len(range(3, n + 1, 1000))


# --- SQLite ------------------------------------------------------------------------------------------------------------

def make_sqlite(path: Path, n: int) -> None:
    con = sqlite3.connect(path)
    con.execute("DROP TABLE IF EXISTS orders")
    con.execute(DDL)
    con.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?)",
                    ((*r[:6], r[6].isoformat(sep=" "), r[7].isoformat(sep=" "), *r[8:]) for r in rows(n)))
    con.commit()
    con.close()


def change_sqlite(path: Path, n: int, *, every: int = 100, inserts: int | None = None) -> None:
    inserts = n // 200 if inserts is None else inserts
    con = sqlite3.connect(path)
    con.execute("UPDATE orders SET status = 'returned', updated_at = datetime('2030-01-01', '+' || id || ' seconds') "
                f"WHERE id % {every} = 7")
    con.execute(f"INSERT INTO orders SELECT id + {INSERT_OFFSET}, customer, status, amount, quantity, priority, "
                "created_at, datetime('2030-01-02', '+' || id || ' seconds'), note, region FROM orders "
                f"WHERE id <= {inserts}")
    con.execute("DELETE FROM orders WHERE id % 1000 = 3")
    con.commit()
    con.close()


# --- PostgreSQL --------------------------------------------------------------------------------------------------------

async def _pg(url: str, *statements: str, records: list[tuple] | None = None) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
        if records is not None:
            await conn.copy_records_to_table("orders", records=records, columns=COLUMNS)
    finally:
        await conn.close()


async def make_postgres(url: str, n: int) -> None:
    import decimal

    records = [(*r[:3], decimal.Decimal(str(r[3])), *r[4:]) for r in rows(n)]
    await _pg(url, "DROP TABLE IF EXISTS orders", DDL, records=records)
    await _pg(url, "ANALYZE orders")


async def change_postgres(url: str, n: int, *, every: int = 100, inserts: int | None = None) -> None:
    """The bench's change_source.sql, with the number of inserts scaled to the table."""
    inserts = n // 200 if inserts is None else inserts
    await _pg(
        url,
        "UPDATE orders SET status = 'returned', updated_at = TIMESTAMP '2030-01-01' + (id || ' seconds')::interval "
        f"WHERE id % {every} = 7",
        f"INSERT INTO orders SELECT id + {INSERT_OFFSET}, customer, status, amount, quantity, priority, created_at, "
        f"TIMESTAMP '2030-01-02' + (id || ' seconds')::interval, note, region FROM orders WHERE id <= {inserts}",
        "DELETE FROM orders WHERE id % 1000 = 3")


# --- MariaDB / MySQL ---------------------------------------------------------------------------------------------------

async def _mysql(url: str, *statements: str, records: list[tuple] | None = None) -> None:
    import aiomysql

    parts = urlsplit(url)
    conn = await aiomysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                                  user=parts.username or "root", password=parts.password or "",
                                  db=parts.path.lstrip("/"), autocommit=True)
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
            if records:
                sql = f"INSERT INTO orders ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
                for start in range(0, len(records), 5000):
                    await cur.executemany(sql, records[start:start + 5000])
    finally:
        conn.close()


async def make_mysql(url: str, n: int) -> None:
    # DATETIME, not TIMESTAMP: MariaDB would give the first TIMESTAMP column ON UPDATE CURRENT_TIMESTAMP
    ddl = DDL.replace("TIMESTAMP", "DATETIME(6)")
    await _mysql(url, ddl, records=list(rows(n)))


async def change_mysql(url: str, n: int, *, every: int = 100, inserts: int | None = None) -> None:
    inserts = n // 200 if inserts is None else inserts
    await _mysql(
        url,
        "UPDATE orders SET status = 'returned', updated_at = TIMESTAMP '2030-01-01 00:00:00' + INTERVAL id SECOND "
        f"WHERE id % {every} = 7",
        f"INSERT INTO orders SELECT id + {INSERT_OFFSET}, customer, status, amount, quantity, priority, created_at, "
        f"TIMESTAMP '2030-01-02 00:00:00' + INTERVAL id SECOND, note, region FROM orders WHERE id <= {inserts}",
        "DELETE FROM orders WHERE id % 1000 = 3")


# --- CSV ---------------------------------------------------------------------------------------------------------------

def _csv_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _write_csv(path: Path, data: list[tuple]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        writer.writerows([_csv_text(v) for v in row] for row in data)


def make_csv(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "orders.csv", list(rows(n)))


def change_csv(folder: Path, n: int, *, every: int = 100, inserts: int | None = None) -> None:
    inserts = n // 200 if inserts is None else inserts
    data = [list(r) for r in rows(n)]
    for row in data:
        if row[0] % every == 7:
            row[2], row[7] = "returned", UPDATED_BASE + datetime.timedelta(seconds=row[0])
    added = [[row[0] + INSERT_OFFSET, *row[1:7], INSERTED_BASE + datetime.timedelta(seconds=row[0]), *row[8:]]
             for row in data[:inserts]]
    kept = [tuple(row) for row in data + added if row[0] % 1000 != 3]
    _write_csv(folder / "orders.csv", kept)
