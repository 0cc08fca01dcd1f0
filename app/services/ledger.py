"""The cost ledger: every server and prebuild image Bivy has seen, in ``data_dir()/ledger.sqlite3``.

One row per server (its price, billing rule, creation, last sighting, deletion) plus the
intervals it was seen powered off, and one row per prebuild image (snapshot storage: its size,
its price per month, creation, last sighting, deletion), so month-to-date spend survives
deletions and restarts.
The file is shared by the window and the CLI (WAL, ``BEGIN IMMEDIATE``); a file that is not
a database is moved aside and a new ledger begins.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from app.domain import Price, Server, ServerStatus
from app.errors import BivyError
from app.providers.base import BillingRule
from app.services import ledger_images
from app.services.billing import Period, billed_amount
from app.services.ledger_images import ImageEntry, SeenImage
from app.settings import file_lock, move_aside

__all__ = [
    "BUSY_TIMEOUT",
    "ImageEntry",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "SeenImage",
    "SeenServer",
    "ledger_path",
]

#: Still 1 with the images table: it was only added (``CREATE TABLE IF NOT EXISTS``), and a
#: Bivy that does not know it reads the servers as before.
_SCHEMA_VERSION = 1
#: How long a ledger writer waits for another process's write to finish (seconds).
BUSY_TIMEOUT = 30.0
#: A server that vanished after a gap this long was deleted at an unknown moment in between.
_VANISH_GAP = timedelta(minutes=5)


class LedgerError(BivyError):
    """The ledger file cannot be opened, read or written."""

    default_hint = "Check that Bivy's data folder is writable, or move ledger.sqlite3 away"


def ledger_path() -> Path:
    """The cost ledger: ``data_dir()/ledger.sqlite3``."""
    from app.settings import data_dir

    return data_dir() / "ledger.sqlite3"


@dataclass(frozen=True)
class LedgerEntry:
    """One server the ledger has seen.

    Attributes:
        account, provider, server_id: its identity.
        name: the workspace name (label) or the server name.
        price: the last price seen (None when never known).
        rule: the provider's billing rule when it was recorded.
        created_at, first_seen, last_seen: UTC; created_at falls back to first_seen.
        deleted_at: when it was deleted (by Bivy) or found gone; None while it exists.
        deleted_by: "bivy" or "vanished" (gone from the provider's list), "" while it exists.
        max_hours: its maximum lifetime if known (label bivy-max-hours).
        status: the last status seen.
        off_periods: intervals it was seen powered off.
    """

    account: str
    provider: str
    server_id: str
    name: str
    price: Price | None
    rule: BillingRule
    created_at: datetime
    first_seen: datetime
    last_seen: datetime
    deleted_at: datetime | None
    deleted_by: str
    max_hours: int | None
    status: ServerStatus
    off_periods: tuple[Period, ...] = ()

    @property
    def end(self) -> datetime | None:
        return self.deleted_at

    @property
    def lifetime_deadline(self) -> datetime | None:
        return None if self.max_hours is None else self.created_at + timedelta(hours=self.max_hours)

    def cost(self, now: datetime, *, window: Period | None = None) -> Decimal | None:
        """Its bill up to deletion (or ``now``), restricted to ``window`` if given."""
        if self.price is None:
            return None
        return billed_amount(
            self.price,
            self.rule,
            self.created_at,
            self.billed_until(now),
            window=window,
            off_periods=self.off_periods,
        )

    def billed_until(self, now: datetime) -> datetime:
        """Its deletion time; for a live one ``now``, unless it has not been listed lately.

        A server nobody has listed for a while (the account's listing fails, the account was
        removed) cannot outlive its maximum lifetime, so it is billed up to that at most.
        """
        if self.deleted_at is not None:
            return self.deleted_at
        deadline = self.lifetime_deadline
        if deadline is None or now - self.last_seen <= _VANISH_GAP:
            return now
        return max(self.last_seen, min(now, deadline))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS servers (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    server_id TEXT NOT NULL,
    name TEXT NOT NULL,
    currency TEXT,
    hourly TEXT,
    monthly TEXT,
    granularity TEXT NOT NULL,
    billed_when_off INTEGER NOT NULL,
    monthly_cap INTEGER NOT NULL,
    minimum_seconds INTEGER NOT NULL,
    created_at REAL NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    deleted_at REAL,
    deleted_by TEXT NOT NULL DEFAULT '',
    max_hours INTEGER,
    status TEXT NOT NULL,
    PRIMARY KEY (account, provider, server_id)
);
CREATE TABLE IF NOT EXISTS off_periods (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    server_id TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS off_periods_server ON off_periods (account, provider, server_id);
"""


def _ts(value: datetime) -> float:
    return value.astimezone(UTC).timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class SeenServer:
    """One server as one refresh listed it, with the price and rule it is billed by."""

    account: str
    server: Server
    price: Price | None
    rule: BillingRule
    max_hours: int | None


class Ledger:
    """The SQLite file. Every method is blocking and opens its own connection (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._init_lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on a fresh connection. The file is in WAL mode (readers never wait
        for a writer) and a busy writer is waited for up to ``BUSY_TIMEOUT``; a write takes
        the write lock up front (``BEGIN IMMEDIATE``), so the window and the CLI recording at
        once never collide between a read and the write that depends on it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._prepare()
            with closing(self._open()) as conn:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        except sqlite3.Error as exc:
            raise LedgerError(f"the cost ledger {self.path} cannot be used: {exc}") from None
        except OSError as exc:
            raise LedgerError(f"the cost ledger {self.path} cannot be opened: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)

    def _prepare(self) -> None:
        """Create or check the schema, once per process. A file that is not an SQLite database
        (or a damaged one) is moved aside with its -wal/-shm (kept, with a notice) and a new
        ledger begins: costs go on being tracked, and the old history is not destroyed."""
        with self._init_lock:
            if self._ready:
                return
            try:
                with closing(self._open()) as conn:
                    self._init(conn)
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:  # busy, locked, full: not corrupt
                    raise
                with file_lock(self.path):
                    self._recover()
            self._ready = True

    def _recover(self) -> None:
        # Under the lock: another process may have moved it aside and begun anew already.
        try:
            with closing(self._open()) as conn:
                self._init(conn)
            return
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:
                raise
            reason = str(exc)
        notice = move_aside(self.path, f"not a usable SQLite database: {reason}")
        if not notice.kept_at:
            raise LedgerError(notice.text)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.replace(side, f"{notice.kept_at}{suffix}")
        with closing(self._open()) as conn:
            self._init(conn)

    def _init(self, conn: sqlite3.Connection) -> None:
        # WAL is a property of the file: set once, every later connection (any process) uses it.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA + ledger_images.SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            # OR IGNORE: another process may create the ledger at the same moment.
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(_SCHEMA_VERSION),),
            )
        elif int(row[0]) > _SCHEMA_VERSION:
            raise LedgerError(
                f"the cost ledger {self.path} was written by a newer Bivy",
                hint="Upgrade Bivy, or move ledger.sqlite3 away to start a new ledger",
            )

    def record(self, seen: Sequence[SeenServer], listed: Collection[str], now: datetime) -> None:
        """Upsert every server seen; mark servers of fully listed accounts that are gone."""
        t = _ts(now)
        with self._connect(write=True) as conn:
            present: set[tuple[str, str, str]] = set()
            for item in seen:
                s = item.server
                key = (item.account, s.provider, s.id)
                present.add(key)
                row = conn.execute(
                    "SELECT status, last_seen FROM servers "
                    "WHERE account = ? AND provider = ? AND server_id = ?",
                    key,
                ).fetchone()
                created = _ts(s.created_at) if s.created_at is not None else t
                price = item.price
                rule = item.rule
                if row is None:
                    conn.execute(
                        "INSERT INTO servers (account, provider, server_id, name, currency, "
                        "hourly, monthly, granularity, billed_when_off, monthly_cap, "
                        "minimum_seconds, created_at, first_seen, last_seen, max_hours, status) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            *key,
                            s.workspace_name or s.name,
                            price.currency if price else None,
                            str(price.hourly) if price else None,
                            str(price.monthly) if price else None,
                            rule.granularity,
                            int(rule.billed_when_off),
                            int(rule.monthly_cap),
                            rule.minimum_seconds,
                            min(created, t),
                            t,
                            t,
                            item.max_hours,
                            s.status.value,
                        ),
                    )
                    if s.status is ServerStatus.OFF:
                        conn.execute("INSERT INTO off_periods VALUES (?, ?, ?, ?, ?)", (*key, t, t))
                    continue
                prev_status, prev_seen = row[0], float(row[1])
                if t < prev_seen:  # an older refresh finishing late: nothing new to learn
                    continue
                # A refresh is idempotent: only the latest observation and the price move.
                conn.execute(
                    "UPDATE servers SET name = ?, last_seen = ?, status = ?, deleted_at = NULL, "
                    "deleted_by = '', max_hours = COALESCE(?, max_hours), "
                    "currency = COALESCE(?, currency), hourly = COALESCE(?, hourly), "
                    "monthly = COALESCE(?, monthly) "
                    "WHERE account = ? AND provider = ? AND server_id = ?",
                    (
                        s.workspace_name or s.name,
                        t,
                        s.status.value,
                        item.max_hours,
                        price.currency if price else None,
                        str(price.hourly) if price else None,
                        str(price.monthly) if price else None,
                        *key,
                    ),
                )
                if s.status is ServerStatus.OFF:
                    if prev_status == ServerStatus.OFF.value:
                        # Seen off twice in a row: assume it stayed off in between.
                        conn.execute(
                            "UPDATE off_periods SET end = ? WHERE account = ? AND provider = ? "
                            "AND server_id = ? AND end = ?",
                            (t, *key, prev_seen),
                        )
                    else:
                        conn.execute("INSERT INTO off_periods VALUES (?, ?, ?, ?, ?)", (*key, t, t))
            if listed:
                gone = conn.execute(
                    "SELECT account, provider, server_id, last_seen, created_at, max_hours "
                    "FROM servers WHERE deleted_at IS NULL"
                ).fetchall()
                for account, provider, server_id, last_seen, created, max_hours in gone:
                    if account not in listed or (account, provider, server_id) in present:
                        continue
                    if float(last_seen) > t:  # a later refresh saw it after this one
                        continue
                    conn.execute(
                        "UPDATE servers SET deleted_at = ?, deleted_by = 'vanished' "
                        "WHERE account = ? AND provider = ? AND server_id = ?",
                        (
                            _vanished_at(float(last_seen), float(created), max_hours, t),
                            account,
                            provider,
                            server_id,
                        ),
                    )

    def mark_deleted(self, account: str, provider: str, server_id: str, at: datetime) -> bool:
        with self._connect(write=True) as conn:
            cur = conn.execute(
                "UPDATE servers SET deleted_at = ?, deleted_by = 'bivy' "
                "WHERE account = ? AND provider = ? AND server_id = ? AND deleted_at IS NULL",
                (_ts(at), account, provider, server_id),
            )
            return cur.rowcount > 0

    def entries(self, since: datetime | None) -> list[LedgerEntry]:
        """Every server not deleted before ``since`` (all of them when None)."""
        with self._connect() as conn:
            query = (
                "SELECT account, provider, server_id, name, currency, hourly, monthly, "
                "granularity, billed_when_off, monthly_cap, minimum_seconds, created_at, "
                "first_seen, last_seen, deleted_at, deleted_by, max_hours, status FROM servers"
            )
            args: tuple[float, ...] = ()
            if since is not None:
                query += " WHERE deleted_at IS NULL OR deleted_at >= ?"
                args = (_ts(since),)
            rows = conn.execute(query + " ORDER BY created_at, server_id", args).fetchall()
            offs: dict[tuple[str, str, str], list[Period]] = {}
            for account, provider, server_id, start, end in conn.execute(
                "SELECT account, provider, server_id, start, end FROM off_periods ORDER BY start"
            ):
                offs.setdefault((account, provider, server_id), []).append((_dt(start), _dt(end)))
        result = []
        # Rows share a handful of prices and rules: build each once (pydantic is not free).
        prices: dict[tuple[str, str, str], Price] = {}
        rules: dict[tuple[str, int, int, int], BillingRule] = {}
        statuses = {s.value: s for s in ServerStatus}
        for r in rows:
            price = None
            if r[4] is not None and r[5] is not None:
                price_key = (r[4], r[5], r[6] or "0")
                price = prices.get(price_key)
                if price is None:
                    price = prices[price_key] = Price(
                        currency=r[4], hourly=Decimal(r[5]), monthly=Decimal(r[6] or "0")
                    )
            rule_key = (r[7], int(r[8]), int(r[9]), int(r[10]))
            rule = rules.get(rule_key)
            if rule is None:
                rule = rules[rule_key] = BillingRule(
                    granularity="second" if r[7] == "second" else "hour",
                    billed_when_off=bool(r[8]),
                    monthly_cap=bool(r[9]),
                    minimum_seconds=int(r[10]),
                )
            result.append(
                LedgerEntry(
                    account=r[0],
                    provider=r[1],
                    server_id=r[2],
                    name=r[3],
                    price=price,
                    rule=rule,
                    created_at=_dt(r[11]),
                    first_seen=_dt(r[12]),
                    last_seen=_dt(r[13]),
                    deleted_at=_dt(r[14]) if r[14] is not None else None,
                    deleted_by=r[15],
                    max_hours=r[16],
                    status=statuses.get(r[17], ServerStatus.UNKNOWN),
                    off_periods=tuple(offs.get((r[0], r[1], r[2]), ())),
                )
            )
        return result

    # -- prebuild images (snapshot storage): the SQL is in app.services.ledger_images ------

    def record_images(
        self, seen: Sequence[SeenImage], listed: Collection[str], now: datetime
    ) -> None:
        """Upsert every image seen; finalise the vanished ones of the fully ``listed``
        accounts (see ``ledger_images.record_images``)."""
        with self._connect(write=True) as conn:
            ledger_images.record_images(conn, seen, listed, _ts(now))

    def mark_image_deleted(self, account: str, provider: str, image_id: str, at: datetime) -> bool:
        """Finalise an image Bivy deleted; False if the ledger did not know it as live."""
        with self._connect(write=True) as conn:
            return ledger_images.mark_deleted(conn, (account, provider, image_id), _ts(at))

    def image_entries(self, since: datetime | None) -> list[ImageEntry]:
        """Every image not deleted before ``since`` (all of them when None)."""
        with self._connect() as conn:
            return ledger_images.entries(conn, None if since is None else _ts(since))


def _vanished_at(last_seen: float, created: float, max_hours: int | None, now: float) -> float:
    """When a server that is no longer listed stopped being billed, as best we know.

    Right after a refresh that still saw it, "now" is within one refresh interval of the
    truth. After a long gap (the app was closed) it can have gone any time in between; the
    ledger then charges up to its maximum lifetime (it cannot have lived longer), else to now:
    an upper bound, so the budget is never understated.
    """
    if now - last_seen <= _VANISH_GAP.total_seconds() or max_hours is None:
        return now
    return max(last_seen, min(now, created + max_hours * 3600))
