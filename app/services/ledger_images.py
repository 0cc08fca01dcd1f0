"""The ledger's prebuild images: snapshot storage, billed per GB-month, pro rata.

One row per image Bivy made (a prebuild, issue 14): its size, what keeping it costs per month
(size × the provider's price per GB-month), when it was created, last listed and deleted. A
deleted prebuild keeps its row, so what it cost this month is still in the month-to-date total.
``app.services.ledger.Ledger`` runs these functions inside its transactions (same file, same
locking); the arithmetic is ``app.services.billing.storage_amount``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from app.domain import Price
from app.services.billing import Period, storage_amount

__all__ = ["SCHEMA", "ImageEntry", "SeenImage", "entries", "mark_deleted", "record_images"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    image_id TEXT NOT NULL,
    name TEXT NOT NULL,
    size_gb TEXT,
    currency TEXT,
    monthly TEXT,
    created_at REAL NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    deleted_at REAL,
    deleted_by TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (account, provider, image_id)
);
"""

ImageKey = tuple[str, str, str]


@dataclass(frozen=True)
class SeenImage:
    """One prebuild image (snapshot) as a listing saw it, or as Bivy just created it.

    Attributes:
        account, provider, image_id: its identity.
        name: what the user recognises (the repository, or the image name).
        size_gb: the billed size, when the provider reports it.
        price: what keeping it costs per month (``monthly``: size × the provider's price per
            GB-month), when known; ``hourly`` is not used.
        created_at: when the provider made it (None: now).
    """

    account: str
    provider: str
    image_id: str
    name: str
    size_gb: Decimal | None
    price: Price | None
    created_at: datetime | None


@dataclass(frozen=True)
class ImageEntry:
    """One prebuild image the ledger has seen.

    Attributes:
        account, provider, image_id, name, size_gb: as in ``SeenImage``.
        price: the last monthly price seen (None when never known).
        created_at, first_seen, last_seen: UTC; created_at falls back to first_seen.
        deleted_at: when Bivy deleted it or found it gone; None while it exists.
        deleted_by: "bivy" or "vanished", "" while it exists.
    """

    account: str
    provider: str
    image_id: str
    name: str
    size_gb: Decimal | None
    price: Price | None
    created_at: datetime
    first_seen: datetime
    last_seen: datetime
    deleted_at: datetime | None
    deleted_by: str

    def cost(self, now: datetime, *, window: Period | None = None) -> Decimal | None:
        """Its storage bill up to deletion (or ``now``), restricted to ``window`` if given."""
        if self.price is None:
            return None
        until = self.deleted_at if self.deleted_at is not None else now
        return storage_amount(self.price.monthly, self.created_at, until, window=window)


def _ts(value: datetime) -> float:
    return value.astimezone(UTC).timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def record_images(
    conn: sqlite3.Connection, seen: Sequence[SeenImage], listed: Collection[str], t: float
) -> None:
    """Upsert every image seen at time ``t`` (a timestamp); one Bivy deleted stays deleted.

    An image of a fully listed account (``listed``) that is live in the ledger but not in
    ``seen`` is finalised as deleted ("vanished") at ``t``: when it went is not known, and
    the upper bound never understates the spend. An account whose listing failed must not be
    in ``listed``.
    """
    present: set[ImageKey] = set()
    for item in seen:
        key = (item.account, item.provider, item.image_id)
        present.add(key)
        price = item.price
        currency = price.currency if price else None
        monthly = str(price.monthly) if price else None
        size = str(item.size_gb) if item.size_gb is not None else None
        row = conn.execute(
            "SELECT last_seen, deleted_at, deleted_by FROM images "
            "WHERE account = ? AND provider = ? AND image_id = ?",
            key,
        ).fetchone()
        if row is None:
            created = _ts(item.created_at) if item.created_at is not None else t
            conn.execute(
                "INSERT INTO images (account, provider, image_id, name, size_gb, currency, "
                "monthly, created_at, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, item.name, size, currency, monthly, min(created, t), t, t),
            )
            continue
        if t < float(row[0]):  # an older listing finishing late: nothing new to learn
            continue
        # Bivy deleted it (after the provider said so): a listing begun before that is stale.
        # One found gone comes back only when listed after that was noticed.
        if row[2] == "bivy" or (row[1] is not None and t <= float(row[1])):
            continue
        conn.execute(
            "UPDATE images SET name = ?, last_seen = ?, deleted_at = NULL, deleted_by = '', "
            "size_gb = COALESCE(?, size_gb), currency = COALESCE(?, currency), "
            "monthly = COALESCE(?, monthly) WHERE account = ? AND provider = ? AND image_id = ?",
            (item.name, t, size, currency, monthly, *key),
        )
    if not listed:
        return
    live = conn.execute(
        "SELECT account, provider, image_id, last_seen FROM images WHERE deleted_at IS NULL"
    ).fetchall()
    for account, provider, image_id, last_seen in live:
        if account not in listed or (account, provider, image_id) in present:
            continue
        if float(last_seen) > t:  # a later listing saw it after this one
            continue
        conn.execute(
            "UPDATE images SET deleted_at = ?, deleted_by = 'vanished' "
            "WHERE account = ? AND provider = ? AND image_id = ?",
            (t, account, provider, image_id),
        )


def mark_deleted(conn: sqlite3.Connection, key: ImageKey, t: float) -> bool:
    """Finalise an image Bivy deleted at ``t``; False if it was not live in the ledger."""
    cur = conn.execute(
        "UPDATE images SET deleted_at = ?, deleted_by = 'bivy' "
        "WHERE account = ? AND provider = ? AND image_id = ? AND deleted_at IS NULL",
        (t, *key),
    )
    return cur.rowcount > 0


def entries(conn: sqlite3.Connection, since: float | None) -> list[ImageEntry]:
    """Every image not deleted before ``since`` (a timestamp; all of them when None)."""
    query = (
        "SELECT account, provider, image_id, name, size_gb, currency, monthly, created_at, "
        "first_seen, last_seen, deleted_at, deleted_by FROM images"
    )
    args: tuple[float, ...] = ()
    if since is not None:
        query += " WHERE deleted_at IS NULL OR deleted_at >= ?"
        args = (since,)
    rows = conn.execute(query + " ORDER BY created_at, image_id", args).fetchall()
    return [
        ImageEntry(
            account=r[0],
            provider=r[1],
            image_id=r[2],
            name=r[3],
            size_gb=Decimal(r[4]) if r[4] is not None else None,
            price=(
                Price(currency=r[5], hourly=Decimal(0), monthly=Decimal(r[6]))
                if r[5] is not None and r[6] is not None
                else None
            ),
            created_at=_dt(r[7]),
            first_seen=_dt(r[8]),
            last_seen=_dt(r[9]),
            deleted_at=_dt(r[10]) if r[10] is not None else None,
            deleted_by=r[11],
        )
        for r in rows
    ]
