"""Which prebuild a new workspace starts from, and when a prebuild is stale (issue 14).

A prebuild matches a workspace of the same account, region (or a region-free image), repository
key (repository + branch) and agent, available and not stale; a local checkout also needs the
devcontainer config hash its work tree has now (a URL repository cannot be hashed before a VM
has it: that VM tells, through status.json ``prebuild_stale``, and the prebuild is marked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from app.domain import ImageStatus, StatusReport, WorkspaceSpec
from app.domain.validation import is_local_repo
from app.services.prebuild_hash import (
    devcontainer_config_hash,
    devcontainer_config_hash_at,
    repo_key,
)
from app.services.prebuild_registry import PrebuildRecord, PrebuildRegistry
from app.services.registry import WorkspaceRecord

__all__ = ["local_config_hash", "mark_stale_from_status", "match_prebuild", "with_local_staleness"]

log = logging.getLogger(__name__)


def match_prebuild(
    records: list[PrebuildRecord],
    spec: WorkspaceSpec,
    account: str,
    region: str | None,
    *,
    config_hash: Callable[[WorkspaceSpec], str] | None = None,
) -> PrebuildRecord | None:
    """The newest usable prebuild for ``spec`` in ``account``/``region``, or None.

    Usable: available, same repository key (repository + branch) and agent, made for this
    region (or for every region); a local checkout also needs the config hash of what its VM
    would get (``local_config_hash``; a URL repository cannot be hashed before a VM has it: the
    VM tells, and a stale one is marked). A record marked stale is passed over.
    """
    key = repo_key(spec.repo_url, spec.branch)
    candidates = [
        r
        for r in records
        if r.account == account
        and r.repo_key == key
        and r.agent == spec.agent
        and r.status == ImageStatus.AVAILABLE
        and not r.stale
        and not r.unrecorded
        and r.region in ("", region or "")
    ]
    if not candidates:
        return None
    if is_local_repo(spec.repo_url):
        try:
            current = (config_hash or local_config_hash)(spec)
        except OSError:
            return None
        candidates = [r for r in candidates if r.config_hash == current]
    candidates.sort(key=lambda r: r.created_at, reverse=True)
    return candidates[0] if candidates else None


def local_config_hash(spec: WorkspaceSpec) -> str:
    """The config hash a VM of ``spec`` (a local checkout) will find: of the commit it gets
    (``spec.branch`` or HEAD), or of the work tree when uncommitted changes go along."""
    root = Path(spec.repo_url)
    if spec.include_uncommitted:
        return devcontainer_config_hash(root, agent=spec.agent)
    return devcontainer_config_hash_at(root, spec.branch or "HEAD", agent=spec.agent)


async def mark_stale_from_status(
    record: WorkspaceRecord | None,
    report: StatusReport | None,
    registry: PrebuildRegistry | None = None,
) -> bool:
    """When a workspace made from a prebuild reports ``prebuild_stale`` (it had to rebuild its
    devcontainer), mark that prebuild stale; returns whether a record changed."""
    if record is None or report is None or not record.prebuild:
        return False
    if not getattr(report, "prebuild_stale", False):
        return False
    registry = registry or PrebuildRegistry()
    current = await asyncio.to_thread(registry.get, record.account, record.prebuild)
    if current is None or current.stale:
        return False
    log.info("prebuild %s is stale (workspace %s rebuilt its devcontainer)", current.id,
             record.name)  # fmt: skip
    return await registry.aupdate(record.account, record.prebuild, stale=True) is not None


def with_local_staleness(records: list[PrebuildRecord]) -> list[PrebuildRecord]:
    """Mark a local checkout's prebuild stale when no workspace of that checkout would match it
    any more: neither its branch's commit nor its work tree has the prebuild's config hash."""
    hashes: dict[tuple[str, str, str], set[str]] = {}
    out = []
    for record in records:
        if record.stale or not record.config_hash or not is_local_repo(record.repo):
            out.append(record)
            continue
        cache_key = (record.repo, record.branch or "HEAD", record.agent)
        if cache_key not in hashes:
            found: set[str] = set()
            root = Path(record.repo)
            with contextlib.suppress(OSError):
                found.add(devcontainer_config_hash(root, agent=record.agent))
            with contextlib.suppress(OSError):
                found.add(devcontainer_config_hash_at(root, cache_key[1], agent=record.agent))
            hashes[cache_key] = found
        current = hashes[cache_key]
        stale = bool(current) and record.config_hash not in current
        out.append(record.model_copy(update={"stale": True}) if stale else record)
    return out
