"""What workspaces cost: billing rules, running cost, a month-to-date SQLite ledger, the budget."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from app.domain import (
    LABEL_MAX_HOURS,
    Price,
    Server,
    ServerStatus,
    Size,
    Workspace,
    utcnow,
)
from app.errors import BivyError
from app.providers.base import BillingRule
from app.settings import file_lock, move_aside

__all__ = [
    "BudgetStatus",
    "CostService",
    "CostSnapshot",
    "LedgerEntry",
    "LedgerError",
    "WorkspaceCost",
    "billed_amount",
    "default_rule_for",
    "hourly_rate_now",
    "ledger_path",
    "month_bounds",
    "running_cost",
]

#: Amounts are kept to a millionth of the currency unit; the UI rounds for display.
MONEY_QUANTUM = Decimal("0.000001")
_US_PER_HOUR = 3_600_000_000
_SCHEMA_VERSION = 1
#: How long a ledger writer waits for another process's write to finish (seconds).
BUSY_TIMEOUT = 30.0
#: A server that vanished after a gap this long was deleted at an unknown moment in between.
_VANISH_GAP = timedelta(minutes=5)

Clock = Callable[[], datetime]
RuleLookup = Callable[[str], BillingRule]
Period = tuple[datetime, datetime]


class LedgerError(BivyError):
    default_hint = "Check that Bivy's data folder is writable, or move ledger.sqlite3 away"


def ledger_path() -> Path:
    """The cost ledger: ``data_dir()/ledger.sqlite3``."""
    from app.settings import data_dir

    return data_dir() / "ledger.sqlite3"


def default_rule_for(kind: str) -> BillingRule:
    """The billing rule the provider of ``kind`` declares; the most expensive rule if unknown.

    An unknown kind (a provider removed since the ledger row was written) gets ``BillingRule()``:
    per started hour, billed when off, which over- rather than under-states the spend.
    """
    from app.providers.registry import PROVIDERS

    cls = PROVIDERS.get(kind)
    return cls.capabilities.billing if cls is not None else BillingRule()


# --- pure billing arithmetic -------------------------------------------------------------


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing ``at``: [first instant, first instant of the next)."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _overlap_us(periods: Iterable[Period], start: datetime, end: datetime) -> int:
    total = 0
    for p_start, p_end in periods:
        lo, hi = max(p_start, start), min(p_end, end)
        if hi > lo:
            total += _micros(hi - lo)
    return total


def _cumulative(
    hourly: Decimal, rule: BillingRule, created: datetime, at: datetime, off: Sequence[Period]
) -> Decimal:
    """What the server has been billed from ``created`` to ``at``, ignoring the monthly cap."""
    if at <= created:
        return Decimal(0)
    billed_us = _micros(at - created)
    if not rule.billed_when_off:
        billed_us -= _overlap_us(off, created, at)
    if billed_us <= 0:
        return Decimal(0)
    billed_us = max(billed_us, rule.minimum_seconds * 1_000_000)
    if rule.granularity == "hour":
        started_hours = -(-billed_us // _US_PER_HOUR)
        return hourly * started_hours
    return hourly * Decimal(billed_us) / Decimal(_US_PER_HOUR)


def _month_segment(
    price: Price,
    rule: BillingRule,
    created: datetime,
    until: datetime,
    month_start: datetime,
    off: Sequence[Period],
) -> Decimal:
    """The bill for the month starting at ``month_start``, for uptime up to ``until``."""
    month_end = month_bounds(month_start)[1]
    lo = max(created, month_start)
    hi = min(until, month_end)
    if hi <= lo:
        return Decimal(0)
    # A started hour that straddles midnight of the 1st is billed in the month it started in.
    amount = _cumulative(price.hourly, rule, created, hi, off) - _cumulative(
        price.hourly, rule, created, lo, off
    )
    if rule.monthly_cap and price.monthly > 0:
        amount = min(amount, price.monthly)
    return amount


def _months(start: datetime, end: datetime) -> Iterator[datetime]:
    month = month_bounds(start)[0]
    while month < end:
        yield month
        month = month_bounds(month)[1]


def _q(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def billed_amount(
    price: Price,
    rule: BillingRule,
    created: datetime,
    until: datetime,
    *,
    window: Period | None = None,
    off_periods: Sequence[Period] = (),
) -> Decimal:
    """The bill for a server that existed from ``created`` to ``until``.

    Every UTC calendar month is billed separately, capped at the monthly price when the rule
    says so. With ``window`` only the months starting inside [window start, window end) count
    (``month_bounds(now)`` gives month-to-date). ``off_periods`` are the intervals the server
    was seen powered off; they are free only if ``rule.billed_when_off`` is false.
    """
    total = Decimal(0)
    for month in _months(created, until):
        if window is not None and not (window[0] <= month < window[1]):
            continue
        total += _month_segment(price, rule, created, until, month, off_periods)
    return _q(total)


def running_cost(server: Server, rule: BillingRule, now: datetime | None = None) -> Decimal | None:
    """What ``server`` has cost since it was created, or None when its price or age is unknown."""
    if server.price is None or server.created_at is None:
        return None
    return billed_amount(server.price, rule, server.created_at, now or utcnow())


def hourly_rate_now(
    price: Price,
    rule: BillingRule,
    created: datetime,
    now: datetime,
    status: ServerStatus = ServerStatus.RUNNING,
) -> Decimal:
    """What one more hour of this server adds to the bill now (0 once the monthly cap is hit)."""
    if status is ServerStatus.OFF and not rule.billed_when_off:
        return Decimal(0)
    if rule.monthly_cap and price.monthly > 0:
        month = month_bounds(now)[0]
        if _month_segment(price, rule, created, now, month, ()) >= price.monthly:
            return Decimal(0)
    return price.hourly


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceCost:
    """The cost of one live workspace.

    Attributes:
        account, name, server_id: which workspace (name is the workspace label or server name).
        currency: the account's currency (never converted).
        hourly: the size's hourly price; monthly: its monthly price (the cap, if the rule caps).
        so_far: what it has cost since it was created.
        rate_now: what the next hour adds (0 when off and free, or capped this month).
    """

    account: str
    name: str
    server_id: str
    currency: str
    hourly: Decimal
    monthly: Decimal
    so_far: Decimal
    rate_now: Decimal


@dataclass(frozen=True)
class BudgetStatus:
    """The monthly budget check, in the budget's currency only.

    Attributes:
        budget, currency: from settings (``monthly_budget``, ``budget_currency``).
        month_to_date: spent this UTC month in that currency, deleted workspaces included.
        projected: what the workspaces running now add until the month ends or each reaches
            its maximum lifetime, whichever is earlier.
        warning: a sentence for the user when month_to_date + projected exceeds the budget.
        other_currencies: currencies with spend this month that the check cannot include.
    """

    budget: Decimal
    currency: str
    month_to_date: Decimal
    projected: Decimal
    warning: str | None
    other_currencies: tuple[str, ...] = ()

    @property
    def exceeded(self) -> bool:
        return self.warning is not None


@dataclass(frozen=True)
class CostSnapshot:
    """Everything the UI shows about money after one refresh. Currencies are never summed.

    Attributes:
        at: when it was computed (UTC).
        workspaces: (account, workspace name) → its cost; workspaces without a price are absent.
        per_hour: currency → what every live workspace together adds per hour now.
        month_to_date: currency → spend this UTC month, deleted workspaces included.
        budget: the budget check, or None when no budget is set.
        unpriced: (account, name) of live workspaces whose price is unknown.
    """

    at: datetime
    workspaces: Mapping[tuple[str, str], WorkspaceCost] = field(default_factory=dict)
    per_hour: Mapping[str, Decimal] = field(default_factory=dict)
    month_to_date: Mapping[str, Decimal] = field(default_factory=dict)
    budget: BudgetStatus | None = None
    unpriced: tuple[tuple[str, str], ...] = ()


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


# --- the ledger --------------------------------------------------------------------------

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


def _max_hours(server: Server, fallback: int | None) -> int | None:
    raw = server.labels.get(LABEL_MAX_HOURS)
    if raw is not None:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
    return fallback


@dataclass(frozen=True)
class _Seen:
    account: str
    server: Server
    price: Price | None
    rule: BillingRule
    max_hours: int | None


class _Ledger:
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
        conn.executescript(_SCHEMA)
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

    def record(self, seen: Sequence[_Seen], listed: Collection[str], now: datetime) -> None:
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


# --- the service -------------------------------------------------------------------------


class CostService:
    """Running cost, hourly rate, month-to-date spend and the budget check, per currency.

    Feed it every refresh with ``observe(workspaces, listed_accounts=…)``; it records what it
    saw in the ledger (``data_dir()/ledger.sqlite3``) and returns a ``CostSnapshot``. Tell it
    when Bivy deletes a server with ``record_deleted``. All ledger I/O runs in a thread.

    Attributes:
        path: the ledger file.
        rule_for: provider kind → ``BillingRule`` (default: the provider's declared capability).
        clock: the current UTC time (tests inject one).
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        rule_for: RuleLookup = default_rule_for,
        clock: Clock = utcnow,
    ) -> None:
        self.path = path or ledger_path()
        self.rule_for = rule_for
        self.clock = clock
        self._ledger = _Ledger(self.path)

    def __repr__(self) -> str:
        return f"CostService(path={str(self.path)!r})"

    async def observe(
        self,
        workspaces: Sequence[Workspace],
        *,
        listed_accounts: Collection[str],
        sizes: Mapping[str, Sequence[Size]] | None = None,
        budget: Decimal | None = None,
        budget_currency: str = "EUR",
    ) -> CostSnapshot:
        """Record one refresh and return the costs it implies.

        Args:
            workspaces: the workspaces listed (those without a server are ignored).
            listed_accounts: accounts whose listing succeeded completely; a ledger server of
                one of these accounts that is not in ``workspaces`` is finalised as deleted.
                An account whose listing failed must not be here.
            sizes: account → its sizes, used for the price when the server carries none.
            budget, budget_currency: ``settings.monthly_budget`` and ``budget_currency``.
        """
        now = self.clock()
        seen = [self._seen(ws, ws.server, sizes) for ws in workspaces if ws.server is not None]
        await asyncio.to_thread(self._ledger.record, seen, tuple(listed_accounts), now)
        return await self.snapshot(
            workspaces, sizes=sizes, budget=budget, budget_currency=budget_currency, now=now
        )

    async def record_deleted(
        self, account: str, provider: str, server_id: str, *, at: datetime | None = None
    ) -> bool:
        """Finalise a server Bivy deleted; returns False if the ledger did not know it as live."""
        return await asyncio.to_thread(
            self._ledger.mark_deleted, account, provider, server_id, at or self.clock()
        )

    async def entries(self, *, month_of: datetime | None = None) -> list[LedgerEntry]:
        """Ledger rows: all, or those that existed during the UTC month containing ``month_of``."""
        if month_of is None:
            return await asyncio.to_thread(self._ledger.entries, None)
        start, end = month_bounds(month_of)
        rows = await asyncio.to_thread(self._ledger.entries, start)
        return [e for e in rows if e.created_at < end]

    async def month_to_date(self, now: datetime | None = None) -> dict[str, Decimal]:
        """Currency → spend in the UTC month containing ``now``, deleted workspaces included."""
        now = now or self.clock()
        return _month_to_date(await self.entries(month_of=now), now)

    async def budget_status(
        self, budget: Decimal | None, currency: str, now: datetime | None = None
    ) -> BudgetStatus | None:
        """The budget check for the servers in the ledger (None when no budget is set)."""
        now = now or self.clock()
        return _budget(await self.entries(month_of=now), budget, currency, now)

    async def snapshot(
        self,
        workspaces: Sequence[Workspace] = (),
        *,
        sizes: Mapping[str, Sequence[Size]] | None = None,
        budget: Decimal | None = None,
        budget_currency: str = "EUR",
        now: datetime | None = None,
    ) -> CostSnapshot:
        """Costs of ``workspaces`` plus the ledger's month-to-date, without recording anything."""
        now = now or self.clock()
        # The arithmetic over hundreds of rows runs in the thread too: the UI's loop must not stall.
        return await asyncio.to_thread(
            self._snapshot, list(workspaces), sizes, budget, budget_currency, now
        )

    def _snapshot(
        self,
        workspaces: Sequence[Workspace],
        sizes: Mapping[str, Sequence[Size]] | None,
        budget: Decimal | None,
        budget_currency: str,
        now: datetime,
    ) -> CostSnapshot:
        start, end = month_bounds(now)
        entries = [e for e in self._ledger.entries(start) if e.created_at < end]
        costs: dict[tuple[str, str], WorkspaceCost] = {}
        per_hour: dict[str, Decimal] = {}
        unpriced: list[tuple[str, str]] = []
        # Indexed once: a linear search per workspace made hundreds of workspaces quadratic.
        by_key: dict[tuple[str, str, str], LedgerEntry] = {}
        for entry in entries:
            by_key.setdefault((entry.account, entry.provider, entry.server_id), entry)
        for ws in workspaces:
            if ws.server is None:
                continue
            item = self._seen(ws, ws.server, sizes)
            created = ws.server.created_at
            if item.price is None or created is None:
                unpriced.append((ws.account, ws.name))
                continue
            ledger = by_key.get((ws.account, ws.server.provider, ws.server.id))
            offs = ledger.off_periods if ledger is not None else ()
            so_far = billed_amount(item.price, item.rule, created, now, off_periods=offs)
            rate = hourly_rate_now(item.price, item.rule, created, now, ws.server.status)
            costs[(ws.account, ws.name)] = WorkspaceCost(
                account=ws.account,
                name=ws.name,
                server_id=ws.server.id,
                currency=item.price.currency,
                hourly=item.price.hourly,
                monthly=item.price.monthly,
                so_far=so_far,
                rate_now=rate,
            )
            if ws.server.status is not ServerStatus.DELETING:
                currency = item.price.currency
                per_hour[currency] = per_hour.get(currency, Decimal(0)) + rate
        spent = _month_to_date(entries, now)
        return CostSnapshot(
            at=now,
            workspaces=costs,
            per_hour=per_hour,
            month_to_date=spent,
            budget=_budget(entries, budget, budget_currency, now, spent),
            unpriced=tuple(unpriced),
        )

    def _seen(
        self, ws: Workspace, server: Server, sizes: Mapping[str, Sequence[Size]] | None
    ) -> _Seen:
        price = server.price
        if price is None and sizes is not None:
            size = next((s for s in sizes.get(ws.account, ()) if s.name == server.size), None)
            price = size.price_in(server.region) if size is not None else None
        return _Seen(
            account=ws.account,
            server=server,
            price=price,
            rule=self.rule_for(server.provider),
            max_hours=_max_hours(server, ws.max_hours),
        )


def _month_to_date(entries: Iterable[LedgerEntry], now: datetime) -> dict[str, Decimal]:
    window = month_bounds(now)
    totals: dict[str, Decimal] = {}
    for entry in entries:
        cost = entry.cost(now, window=window)
        if cost is None or entry.price is None:
            continue
        currency = entry.price.currency
        totals[currency] = totals.get(currency, Decimal(0)) + cost
    return totals


def _projection(entry: LedgerEntry, now: datetime) -> Decimal:
    """What a live server adds from ``now`` to the end of the month or of its lifetime."""
    if entry.price is None or entry.deleted_at is not None:
        return Decimal(0)
    if entry.status is ServerStatus.OFF and not entry.rule.billed_when_off:
        return Decimal(0)
    window = month_bounds(now)
    horizon = window[1]
    deadline = entry.lifetime_deadline
    if deadline is not None:
        horizon = min(horizon, deadline)
    if horizon <= now:
        return Decimal(0)
    later = billed_amount(
        entry.price,
        entry.rule,
        entry.created_at,
        horizon,
        window=window,
        off_periods=entry.off_periods,
    )
    sofar = billed_amount(
        entry.price,
        entry.rule,
        entry.created_at,
        now,
        window=window,
        off_periods=entry.off_periods,
    )
    return max(Decimal(0), later - sofar)


def _budget(
    entries: Sequence[LedgerEntry],
    budget: Decimal | None,
    currency: str,
    now: datetime,
    spent: Mapping[str, Decimal] | None = None,
) -> BudgetStatus | None:
    if budget is None:
        return None
    if spent is None:
        spent = _month_to_date(entries, now)
    projected = sum(
        (
            _projection(e, now)
            for e in entries
            if e.price is not None and e.price.currency == currency
        ),
        Decimal(0),
    )
    mtd = spent.get(currency, Decimal(0))
    others = tuple(sorted(c for c, v in spent.items() if c != currency and v > 0))
    warning = None
    if mtd > budget:
        warning = f"This month's spend, {mtd:.2f} {currency}, is over the budget of {budget:.2f}."
    elif mtd + projected > budget:
        warning = (
            f"The monthly budget of {budget:.2f} {currency} will be exceeded: "
            f"{mtd:.2f} spent so far and {projected:.2f} more if the running workspaces "
            "live to the end of the month or of their lifetime."
        )
    if warning and others:
        warning += f" Spend in {', '.join(others)} is not included."
    return BudgetStatus(
        budget=budget,
        currency=currency,
        month_to_date=mtd,
        projected=_q(projected),
        warning=warning,
        other_currencies=others,
    )
