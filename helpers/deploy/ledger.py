"""The cost ledger: one row per request in a real database, and the paid-API budget kept in it.

SQLite in WAL mode by default (``sqlite:///path/to/ledger.db``): a row is acknowledged only after its
transaction commits with ``synchronous=FULL``, so a killed router loses no acknowledged row; request ids
are primary keys, so re-running a request records it once (idempotent).

The budget is enforced in the same database: before a paid call the router *reserves* its estimated
cost inside an ``IMMEDIATE`` transaction that first checks spent + reserved + estimate <= cap, and
*settles* it afterwards with the actual cost. Concurrent requests (threads or several router
processes sharing the file) serialise on that transaction, so together they can never overshoot the cap.

Other database URLs (PostgreSQL through SQLAlchemy) are named in the README as the way to share one
ledger between several routers (not implemented yet); this module implements SQLite and refuses other URLs with that fix.
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
    cost_usd REAL NOT NULL DEFAULT 0, latency_s REAL, retries INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL, error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS reservations (
    request_id TEXT PRIMARY KEY, month TEXT NOT NULL, usd REAL NOT NULL, ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spend (
    month TEXT PRIMARY KEY, usd REAL NOT NULL DEFAULT 0);
"""


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
        raise InputError(f"ledger URL {url!r} is not a SQLite URL",
                         fix="use sqlite:///path/to/ledger.db (several routers on one machine can share it); for a shared "
                             "PostgreSQL ledger see the README's 'Beyond one machine' section")
    return Path(url.removeprefix("sqlite:///"))


class Ledger:
    """``Ledger("sqlite:///ledger.db", monthly_cap_usd=500)``. Thread-safe; safe across processes."""

    def __init__(self, url: str, monthly_cap_usd: float | None = None, timeout_s: float = 30.0):
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if monthly_cap_usd is not None and monthly_cap_usd < 0:
            raise InputError(f"monthly cap {monthly_cap_usd} is negative", fix="set a cap >= 0 USD (0 = no paid calls)")
        self.cap = monthly_cap_usd
        self.timeout_s = timeout_s
        self._local = threading.local()
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connection(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before record() returns
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        yield db

    @contextmanager
    def _transaction(self):
        with self._connection() as db:
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

    # ---------------------------------------------------------------- requests
    def record(self, request_id: str, route: str, reason: str, outcome: str, upstream: str = "", model: str = "",
               tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0, latency_s: float | None = None,
               retries: int = 0, error: str = "") -> bool:
        """Record one request; returns False when ``request_id`` was already recorded (idempotent rerun)."""
        row = (request_id, dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), route, reason, upstream, model,
               int(tokens_in), int(tokens_out), float(cost_usd), latency_s, int(retries), outcome, error)
        with self._transaction() as db:
            cursor = db.execute(f"INSERT OR IGNORE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", row)
        return cursor.rowcount == 1

    def seen(self, request_id: str) -> bool:
        with self._connection() as db:
            return db.execute("SELECT 1 FROM requests WHERE request_id = ?", (request_id,)).fetchone() is not None

    def rows(self):
        """Every recorded request as a DataFrame."""
        import pandas as pd

        with self._connection() as db:
            return pd.read_sql_query("SELECT * FROM requests ORDER BY ts", db)

    def totals(self) -> dict[str, float]:
        with self._connection() as db:
            n, cost, tin, tout = db.execute("SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in), 0), "
                                            "COALESCE(SUM(tokens_out), 0) FROM requests").fetchone()
        return {"requests": n, "cost_usd": cost, "tokens_in": tin, "tokens_out": tout}

    # ---------------------------------------------------------------- budget
    def spent(self, month: str | None = None) -> float:
        with self._connection() as db:
            row = db.execute("SELECT usd FROM spend WHERE month = ?", (month or _month(),)).fetchone()
        return row[0] if row else 0.0

    def reserved(self, month: str | None = None) -> float:
        with self._connection() as db:
            return db.execute("SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE month = ?", (month or _month(),)).fetchone()[0]

    def reserve(self, request_id: str, estimate_usd: float, month: str | None = None) -> Reservation:
        """Hold ``estimate_usd`` of this month's budget for a paid call, or raise :class:`BudgetExceeded`."""
        month = month or _month()
        with self._transaction() as db:
            spent = (db.execute("SELECT usd FROM spend WHERE month = ?", (month,)).fetchone() or (0.0,))[0]
            held = db.execute("SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE month = ?", (month,)).fetchone()[0]
            if self.cap is not None and spent + held + estimate_usd > self.cap + 1e-12:
                raise BudgetExceeded(f"a paid call estimated at ${estimate_usd:.4f} would pass the ${self.cap:.2f} monthly cap "
                                     f"(spent ${spent:.4f}, held ${held:.4f})",
                                     fix="serve it locally, queue it for next month, or raise the cap in the policy file")
            db.execute("INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?)",
                       (request_id, month, float(estimate_usd), dt.datetime.now(dt.timezone.utc).isoformat()))
        return Reservation(request_id, month, estimate_usd)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the held estimate with the actual cost (0 when the call failed and nothing was billed)."""
        with self._transaction() as db:
            db.execute("DELETE FROM reservations WHERE request_id = ?", (reservation.request_id,))
            db.execute("INSERT INTO spend (month, usd) VALUES (?, ?) ON CONFLICT(month) DO UPDATE SET usd = usd + excluded.usd",
                       (reservation.month, float(actual_usd)))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
