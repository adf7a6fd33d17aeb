"""The cost ledger: one row per request in a real database, and the paid-API budget kept in it.

The ledger is addressed by a database URL:

- ``sqlite:///path/to/ledger.db`` (the default): SQLite in WAL mode. A row is acknowledged only after its
  transaction commits with ``synchronous=FULL``, so a killed router loses no acknowledged row; several router
  processes on one machine can share the file.
- ``postgresql://user@host:port/db``: PostgreSQL through psycopg 3 (``pip install -e ".[shared]"``), so router
  instances on several machines share one ledger and one budget. Commits are durable by PostgreSQL's default
  (``synchronous_commit = on``).

Request ids are primary keys, so re-running a request records it once (idempotent). The budget is enforced in
the same database: before a paid call the router *reserves* its estimated cost inside a write transaction that
first checks spent + reserved + estimate <= cap, and *settles* it afterwards with the actual cost. Write
transactions are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so
concurrent requests in any number of threads, processes or machines can never overshoot the cap together.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, KitError

COLUMNS = ("request_id", "ts", "route", "reason", "upstream", "model", "tokens_in", "tokens_out", "cost_usd", "latency_s",
           "retries", "outcome", "error")
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, ts TEXT NOT NULL, route TEXT NOT NULL, reason TEXT NOT NULL, upstream TEXT,
    model TEXT, tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd {real} NOT NULL DEFAULT 0, latency_s {real}, retries INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', correct INTEGER);
CREATE TABLE IF NOT EXISTS reservations (
    request_id TEXT PRIMARY KEY, month TEXT NOT NULL, usd {real} NOT NULL, ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spend (
    month TEXT PRIMARY KEY, usd {real} NOT NULL DEFAULT 0);
"""
LOCK_KEY = 7_305_505  # the PostgreSQL advisory lock all routers sharing a ledger take for their writes


class BudgetExceeded(KitError):
    """A paid call would take the month's spend past the cap."""


@dataclass
class Reservation:
    request_id: str
    month: str
    usd: float


def _month(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m")


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    if not url.startswith("sqlite:///"):
        raise InputError(f"ledger URL {url!r} is neither a SQLite nor a PostgreSQL URL",
                         fix="use sqlite:///path/to/ledger.db (one machine) or postgresql://user@host:5432/ledger (several)")
    return Path(url.removeprefix("sqlite:///"))


class _SQLite:
    """SQLite in WAL mode, one connection per thread."""

    placeholder = "?"

    def __init__(self, url: str, timeout_s: float):
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s

    def connect(self):
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before record() returns
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def create(self, db) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA.format(real="REAL"))
        if "correct" not in {row[1] for row in db.execute("PRAGMA table_info(requests)")}:  # a ledger from before scoring
            db.execute("ALTER TABLE requests ADD COLUMN correct INTEGER")

    @contextmanager
    def write(self, db):
        for attempt in range(50):
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:  # another process holds the write lock past busy_timeout
                if "locked" not in str(error) or attempt == 49:
                    raise
                time.sleep(0.01)
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


class _Postgres:
    """PostgreSQL through psycopg 3, one autocommit connection per thread, writes under an advisory lock."""

    placeholder = "%s"

    def __init__(self, url: str, timeout_s: float):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise InputError("a PostgreSQL ledger needs psycopg 3", fix='pip install -e ".[shared]" (or pip install "psycopg[binary]>=3.2,<4")') from None
        self.url, self.timeout_s = url, timeout_s

    def connect(self):
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.timeout_s)))
        except psycopg.OperationalError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(f"cannot reach the PostgreSQL ledger ({first})",
                             fix="check the URL's host, port, user and database, and that the server is up") from None

    def create(self, db) -> None:
        with self.write(db):
            for statement in SCHEMA.format(real="DOUBLE PRECISION").split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS correct INTEGER")  # a ledger from before scoring

    @contextmanager
    def write(self, db):
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            yield db


class Ledger:
    """``Ledger("sqlite:///ledger.db", monthly_cap_usd=500)`` or ``Ledger("postgresql://...")``. Thread-safe; safe
    across processes (and, with PostgreSQL, across machines)."""

    def __init__(self, url: str, monthly_cap_usd: float | None = None, timeout_s: float = 30.0):
        if monthly_cap_usd is not None and monthly_cap_usd < 0:
            raise InputError(f"monthly cap {monthly_cap_usd} is negative", fix="set a cap >= 0 USD (0 = no paid calls)")
        self.url = url
        self.backend = _Postgres(url, timeout_s) if url.startswith(("postgresql://", "postgres://")) else _SQLite(url, timeout_s)
        self.path = getattr(self.backend, "path", None)
        self.cap = monthly_cap_usd
        self._local = threading.local()
        with self._connection() as db:
            self.backend.create(db)

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.backend.placeholder)

    @contextmanager
    def _connection(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = self.backend.connect()
            self._local.db = db
        yield db

    @contextmanager
    def _transaction(self):
        with self._connection() as db, self.backend.write(db):
            yield db

    def _one(self, db, statement: str, params: tuple = ()):
        return db.execute(self._sql(statement), params).fetchone()

    # ---------------------------------------------------------------- requests
    def record(self, request_id: str, route: str, reason: str, outcome: str, upstream: str = "", model: str = "",
               tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0, latency_s: float | None = None,
               retries: int = 0, error: str = "") -> bool:
        """Record one request; returns False when ``request_id`` was already recorded (idempotent rerun)."""
        row = (request_id, dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), route, reason, upstream, model,
               int(tokens_in), int(tokens_out), float(cost_usd), latency_s, int(retries), outcome, error)
        with self._transaction() as db:
            cursor = db.execute(self._sql(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                                          "ON CONFLICT (request_id) DO NOTHING"), row)
        return cursor.rowcount == 1

    def score(self, request_id: str, correct: bool | None) -> None:
        """Record whether the answer to ``request_id`` was right against its label (None: not scored, e.g. a stand-in's)."""
        with self._transaction() as db:
            db.execute(self._sql("UPDATE requests SET correct = ? WHERE request_id = ?"),
                       (None if correct is None else int(bool(correct)), request_id))

    def seen(self, request_id: str) -> bool:
        with self._connection() as db:
            return self._one(db, "SELECT 1 FROM requests WHERE request_id = ?", (request_id,)) is not None

    def rows(self):
        """Every recorded request as a DataFrame."""
        import pandas as pd

        with self._connection() as db:
            cursor = db.execute("SELECT * FROM requests ORDER BY ts, request_id")
            return pd.DataFrame(cursor.fetchall(), columns=[c[0] for c in cursor.description])

    def totals(self) -> dict[str, float]:
        with self._connection() as db:
            n, cost, tin, tout = self._one(db, "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in), 0), "
                                               "COALESCE(SUM(tokens_out), 0) FROM requests")
        return {"requests": int(n), "cost_usd": float(cost), "tokens_in": int(tin), "tokens_out": int(tout)}

    # ---------------------------------------------------------------- budget
    def spent(self, month: str | None = None) -> float:
        with self._connection() as db:
            row = self._one(db, "SELECT usd FROM spend WHERE month = ?", (month or _month(),))
        return float(row[0]) if row else 0.0

    def reserved(self, month: str | None = None) -> float:
        with self._connection() as db:
            return float(self._one(db, "SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE month = ?", (month or _month(),))[0])

    def reserve(self, request_id: str, estimate_usd: float, month: str | None = None) -> Reservation:
        """Hold ``estimate_usd`` of this month's budget for a paid call, or raise :class:`BudgetExceeded`."""
        month = month or _month()
        with self._transaction() as db:
            spent = float((self._one(db, "SELECT usd FROM spend WHERE month = ?", (month,)) or (0.0,))[0])
            held = float(self._one(db, "SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE month = ?", (month,))[0])
            if self.cap is not None and spent + held + estimate_usd > self.cap + 1e-12:
                raise BudgetExceeded(f"a paid call estimated at ${estimate_usd:.4f} would pass the ${self.cap:.2f} monthly cap "
                                     f"(spent ${spent:.4f}, held ${held:.4f})",
                                     fix="serve it locally, queue it for next month, or raise the cap in the policy file")
            db.execute(self._sql("INSERT INTO reservations VALUES (?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE "
                                 "SET month = excluded.month, usd = excluded.usd, ts = excluded.ts"),
                       (request_id, month, float(estimate_usd), dt.datetime.now(dt.timezone.utc).isoformat()))
        return Reservation(request_id, month, estimate_usd)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the held estimate with the actual cost (0 when the call failed and nothing was billed)."""
        with self._transaction() as db:
            db.execute(self._sql("DELETE FROM reservations WHERE request_id = ?"), (reservation.request_id,))
            db.execute(self._sql("INSERT INTO spend (month, usd) VALUES (?, ?) ON CONFLICT (month) DO UPDATE SET usd = spend.usd + excluded.usd"),
                       (reservation.month, float(actual_usd)))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
