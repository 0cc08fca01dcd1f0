"""The ``local`` provider: workspace VMs on this computer with QEMU, no account needed.

Each VM is a qcow2 overlay on a cached base image, booted with a NoCloud seed carrying the same
user data the clouds get, with user-mode networking that forwards only 127.0.0.1:<port> to the
guest's SSH. The "cloud" state is the VM folders (``client.VmStore``); QEMU runs daemonized so
VMs outlive the app. The self-delete is a clean power-off, after which ``list``/``get`` reap
the VM (folder and disk). A VM whose QEMU stopped otherwise stays listed as ``off`` with the
reason, until deleted.

Isolation: nothing outside this computer reaches the VM (only 127.0.0.1:<port> → 22 is
forwarded), but QEMU's user-mode network lets the guest reach services listening on the host's
loopback as 10.0.2.2 (QEMU has no switch to turn that off; the offline tests rely on it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import httpx

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    LABEL_WORKSPACE,
    AccountInfo,
    CreateServerRequest,
    Price,
    Region,
    Server,
    ServerStatus,
    Size,
    utcnow,
)
from app.errors import BivyError, Conflict, InvalidInput, NotFound
from app.paths import data_dir
from app.providers.base import BillingRule, Capabilities, PrepareProgress, Provider, ProviderOption
from app.providers.local import accel as accel_mod
from app.providers.local import image as image_mod
from app.providers.local import qemu
from app.providers.local.client import VmFiles, VmStore
from app.providers.local.host import (
    HostResources,
    find_qemu,
    find_qemu_img,
    host_arch,
    host_resources,
)
from app.providers.local.image_ops import LocalImages
from app.providers.local.images import ImageStore
from app.providers.local.models import (
    DEFAULT_SIZE,
    KIND,
    REGION_ID,
    REGION_NAME,
    SIZE_PRESETS,
    BootImage,
    SizePreset,
    VmState,
)
from app.providers.local.seed import build_seed, meta_data

#: Local VMs cost nothing; the currency only keeps money columns uniform.
CURRENCY = "EUR"
ZERO_PRICE = Price(currency=CURRENCY, hourly=Decimal(0), monthly=Decimal(0))
#: A VM folder still ``creating`` after this long, with no QEMU, was abandoned mid-create.
CREATE_GRACE = timedelta(minutes=10)
#: Beside a size when QEMU has to emulate the CPU (the long reason is in the settings' check).
SLOW_NOTICE = "Slow: no hardware virtualisation, QEMU emulates the CPU"
#: A prebuild builder that powered itself off stays (off) this long to be imaged.
BUILDER_KEEP = timedelta(minutes=30)
#: The builder's label (app.services.prebuild_hash.LABEL_PREBUILD: services sit above us).
LABEL_PREBUILD = "bivy-prebuild"
#: Memory left to the host, whatever the size.
HOST_RESERVE_BYTES = 1 << 30
START_ATTEMPTS = 3

SELF_DELETE_SCRIPT = r"""#!/bin/sh
# Bivy self-delete for a local VM (QEMU on the user's own computer). There is no API to call:
# the VM powers itself off cleanly, and the app, seeing QEMU exit after the guest's power-off,
# deletes the VM's folder and disk on its next look. Exits non-zero only if power-off failed.
set -u
echo "bivy-self-delete: powering off; the app deletes this VM and its disk"
if command -v systemctl >/dev/null 2>&1 && systemctl poweroff; then
    exit 0
fi
if poweroff; then
    exit 0
fi
echo "bivy-self-delete: could not power off" >&2
exit 5
"""


def fitting_presets(host: HostResources) -> list[SizePreset]:
    """The presets this computer can give: CPUs it has, memory it has (leaving 1 GiB), disk
    space it has free."""
    return [
        p
        for p in SIZE_PRESETS
        if p.cpus <= host.cpus
        and (p.memory_gb << 30) + HOST_RESERVE_BYTES <= host.memory_bytes
        and (p.disk_gb << 30) <= host.disk_free_bytes
    ]


class LocalProvider(LocalImages, Provider):
    """Workspace VMs on this computer (QEMU), behind the same interface as the clouds."""

    kind: ClassVar[str] = KIND
    display_name: ClassVar[str] = "QEMU on this computer"
    capabilities: ClassVar[Capabilities] = Capabilities(
        # NoCloud reads the seed's file as is: no provider limit, no base64 needed.
        user_data_limit=1 << 20,
        user_data_gzip_base64=False,
        # No firewall API is needed: only 127.0.0.1:<port> → guest port 22 is forwarded.
        firewall=False,
        labels=True,
        unique_names=True,
        rate_limit_per_hour=0,
        billing=BillingRule(
            granularity="second", billed_when_off=False, monthly_cap=False, minimum_seconds=0
        ),
        # No metadata service: the self-delete is a power-off.
        metadata_url="",
        # The VM folders are the truth: a VM not listed was reaped or deleted.
        listing_is_current=True,
        # Prebuilds: the powered-off VM's disk flattened into a qcow2 (local/images.py).
        snapshots=True,
    )
    options: ClassVar[tuple[ProviderOption, ...]] = (
        ProviderOption(
            key="image",
            label="Disk image",
            required=False,
            help=(
                "A qcow2 or raw disk image with cloud-init, or a .json manifest for direct "
                "kernel boot. Empty: the official Ubuntu 24.04 cloud image, downloaded once "
                "(about 600 MB) and checked against its SHA256SUMS."
            ),
            env=("BIVY_LOCAL_IMAGE",),
        ),
        ProviderOption(
            key="qemu",
            label="QEMU binary",
            required=False,
            help="Empty: qemu-system-x86_64 (or qemu-system-aarch64) from the PATH.",
            env=("BIVY_QEMU",),
        ),
        ProviderOption(
            key="accel",
            label="Accelerator",
            required=False,
            pattern=r"^(auto|kvm|hvf|tcg)?$",
            help=(
                "Empty or auto: probed (KVM on Linux, HVF on macOS, else emulation, which is "
                "slow). kvm, hvf or tcg force one."
            ),
            env=("BIVY_LOCAL_ACCEL",),
        ),
    )
    token_guidance: ClassVar[str] = (
        "No account or token: VMs run on this computer with QEMU. Install QEMU first "
        "(Debian/Ubuntu: qemu-system-x86 qemu-utils; macOS: brew install qemu). Nothing on "
        "the network can reach the VM (only SSH is forwarded, on 127.0.0.1), but like any "
        "QEMU user-mode network the VM can reach services listening on this computer "
        "(as 10.0.2.2)."
    )
    default_region: ClassVar[str] = REGION_ID
    default_size: ClassVar[str] = DEFAULT_SIZE
    image_price = ZERO_PRICE

    def __init__(
        self,
        options: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        root: Path | None = None,
        image_transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Nothing is probed here: listing works without QEMU installed.
        self._image_option = (options.get("image") or "").strip()
        self._qemu_option = (options.get("qemu") or "").strip()
        accel = (options.get("accel") or "").strip().lower()
        self._accel_option = "" if accel == "auto" else accel
        self._sleep = sleep
        self.root = root or data_dir() / "local"
        self.store = VmStore(self.root / "vms")
        self.images = ImageStore(self.root / "images")
        self._image_transport = image_transport
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalProvider(root={str(self.root)!r})"

    # -- what this computer offers -------------------------------------------------------------

    def _qemu(self) -> Path:
        if os.name != "posix":
            raise InvalidInput(
                "local VMs need Linux or macOS",
                hint="Use a cloud provider on this computer",
                provider=KIND,
            )
        return find_qemu(host_arch(), self._qemu_option)

    def _accel(self, qemu_bin: Path) -> accel_mod.AccelVerdict:
        return accel_mod.detect(
            qemu_bin, host_arch(), self.root / "accel.json", forced=self._accel_option
        )

    async def validate(self) -> AccountInfo:
        """QEMU and qemu-img are installed and a test guest runs (which accelerator, how fast)."""

        def check() -> AccountInfo:
            qemu_bin = self._qemu()
            find_qemu_img(qemu_bin)
            verdict = self._accel(qemu_bin)
            how = {"kvm": "KVM", "hvf": "Hypervisor.framework", "tcg": "emulation"}[verdict.accel]
            description = f"VMs on this computer with QEMU ({how})"
            if verdict.note:
                description += f"; {verdict.note}"
            return AccountInfo(provider=KIND, description=description, currency=CURRENCY)

        return await asyncio.to_thread(check)

    async def regions(self) -> list[Region]:
        return [Region(id=REGION_ID, name=REGION_NAME)]

    def _host(self) -> HostResources:
        return host_resources(self.root)

    def _notice(self) -> str:
        """What to say beside every size: the slow mode, or why no VM can start at all."""
        try:
            verdict = self._accel(self._qemu())
        except InvalidInput as exc:
            return exc.one_line()
        return SLOW_NOTICE if verdict.slow else ""

    async def sizes(self, region: str | None = None) -> list[Size]:
        """The presets this computer can give, free; each carries the slow-mode notice when
        there is no hardware virtualisation (the first call may probe it: a few seconds)."""
        if region not in (None, REGION_ID):
            return []
        host = await asyncio.to_thread(self._host)
        notice = await asyncio.to_thread(self._notice)
        arch = "arm" if host_arch() == "aarch64" else "x86"
        return [
            Size(
                name=p.name,
                description=f"{p.cpus} CPU, {p.memory_gb} GB memory, {p.disk_gb} GB disk "
                "(on this computer)",
                cores=p.cpus,
                memory_gb=float(p.memory_gb),
                disk_gb=p.disk_gb,
                cpu_type="shared",
                architecture=arch,
                prices={REGION_ID: ZERO_PRICE},
                notice=notice,
            )
            for p in fitting_presets(host)
        ]

    def _preset(self, name: str, host: HostResources) -> SizePreset:
        fits = fitting_presets(host)
        for preset in fits:
            if preset.name == name:
                return preset
        if name == DEFAULT_SIZE and fits:
            return fits[-1]  # the default is a wish: the largest that fits comes closest
        known = {p.name for p in SIZE_PRESETS}
        if not fits:
            raise InvalidInput(
                "this computer has too few CPUs, too little memory or disk space for a local VM",
                hint="A local VM needs at least 1 CPU, 3 GB of memory and 20 GB of free disk",
                provider=KIND,
            )
        names = ", ".join(p.name for p in fits)
        if name in known:
            raise InvalidInput(
                f"the size {name} does not fit this computer", hint=f"Choose one of: {names}",
                provider=KIND,
            )  # fmt: skip
        raise InvalidInput(f"there is no local size {name!r}", hint=f"Choose one of: {names}",
                           provider=KIND)  # fmt: skip

    # -- the image -----------------------------------------------------------------------------

    def _image(self, progress: image_mod.DownloadProgress | None = None) -> BootImage:
        if self._image_option:
            return image_mod.user_image(self._image_option)
        return image_mod.ubuntu_image(
            self.root / "images", host_arch(), progress=progress, transport=self._image_transport
        )

    async def prepare(self, request: CreateServerRequest, progress: PrepareProgress) -> None:
        """Before ``create``: the accelerator verdict (told when slow) and the base image
        (downloaded with progress on first use)."""
        loop = asyncio.get_running_loop()

        def on_bytes(done: int, total: int) -> None:
            mb = done / 1e6
            detail = (
                f"Downloading the Ubuntu 24.04 cloud image: {mb:.0f} of {total / 1e6:.0f} MB"
                if total
                else f"Downloading the Ubuntu 24.04 cloud image: {mb:.0f} MB"
            )
            loop.call_soon_threadsafe(progress, detail, done / total if total else None)

        def work() -> tuple[BootImage, accel_mod.AccelVerdict]:
            qemu_bin = self._qemu()
            find_qemu_img(qemu_bin)
            verdict = self._accel(qemu_bin)
            return self._image(on_bytes), verdict

        progress("Checking QEMU and hardware virtualisation", None)
        boot, verdict = await asyncio.to_thread(work)
        if verdict.note:
            progress(verdict.note[:1].upper() + verdict.note[1:], None)
        progress(f"Base image: {boot.source or boot.disk}", 1.0)

    # -- servers -------------------------------------------------------------------------------

    def _server(self, state: VmState, status: ServerStatus, detail: str = "") -> Server:
        return Server(
            provider=KIND,
            id=state.id,
            name=state.name,
            status=status,
            region=REGION_ID,
            size=state.size,
            ipv4="127.0.0.1",
            ssh_port=state.ssh_port or 22,
            created_at=state.created_at,
            labels=dict(state.labels),
            price=ZERO_PRICE,
            status_detail=detail,
        )

    async def _look(self, vm_id: str) -> Server | None:
        """The VM's server, or None once it is gone (reaped after a guest power-off)."""
        state = await asyncio.to_thread(self.store.read, vm_id)
        files = self.store.files(vm_id)
        pid = await asyncio.to_thread(qemu.running_pid, files)
        if state.phase == "deleting":
            await self._destroy(state, files)  # a delete interrupted halfway: finish it
            return None
        if pid is not None:
            if state.phase == "creating":
                return self._server(state, ServerStatus.STARTING)
            return await self._running(state)
        if state.phase == "creating":
            if utcnow() - state.created_at < CREATE_GRACE:
                return self._server(state, ServerStatus.INITIALIZING, "being created")
            return self._server(state, ServerStatus.OFF, "its creation was interrupted; delete it")
        console = await asyncio.to_thread(self.store.tail, files.console)
        reason = await asyncio.to_thread(qemu.shutdown_reason, files, console)
        if reason == "poweroff" and LABEL_PREBUILD in state.labels:
            # A sealed prebuild builder powers itself off to be imaged: kept (off) for a while,
            # then reaped like any self-delete (an app that died mid-build leaves nothing).
            stopped = await asyncio.to_thread(_mtime, files.qemu_log)
            if stopped is None or time.time() - stopped < BUILDER_KEEP.total_seconds():
                return self._server(state, ServerStatus.OFF, "powered off (a prebuild's builder)")
        if reason == "poweroff":
            await self._destroy(state, files)  # the self-delete: reap folder and disk
            return None
        why = (
            "QEMU was stopped on this computer"
            if reason == "host"
            else "QEMU is not running (the computer restarted, or it was killed)"
        )
        return self._server(state, ServerStatus.OFF, f"{why}; delete the workspace")

    async def _running(self, state: VmState) -> Server:
        try:
            answer = await qemu.qmp(state.qmp_socket, "query-status", timeout=3.0)
        except BivyError:
            return self._server(state, ServerStatus.RUNNING, state.accel_note)
        status = str(answer.get("status", ""))
        if status in ("running", "inmigrate", "postmigrate", "prelaunch", "finish-migrate"):
            return self._server(state, ServerStatus.RUNNING, state.accel_note)
        if status == "guest-panicked":
            return self._server(state, ServerStatus.UNKNOWN, "the guest's kernel panicked")
        if status in ("shutdown",):
            return self._server(state, ServerStatus.STOPPING)
        return self._server(state, ServerStatus.UNKNOWN, f"QEMU reports {status or 'nothing'}")

    async def list(self) -> list[Server]:
        servers = []
        for vm_id in await asyncio.to_thread(self.store.ids):
            try:
                server = await self._look(vm_id)
            except NotFound:
                continue  # a folder without a readable vm.json: not (or no longer) a VM
            if server is not None and server.labels.get(LABEL_MANAGED_BY) == LABEL_MANAGED_BY_VALUE:
                servers.append(server)
        return servers

    async def get(self, server_id: str) -> Server:
        server = await self._look(server_id)
        if server is None:
            raise NotFound(f"the local VM {server_id} is gone (it powered off)", provider=KIND)
        return server

    async def delete(self, server_id: str) -> None:
        """Stop QEMU (QMP quit, then signals) and delete the folder; a VM already gone is fine."""
        try:
            state = await asyncio.to_thread(self.store.read, server_id)
        except NotFound:
            try:
                files = self.store.files(server_id)
            except NotFound:
                return
            await asyncio.to_thread(self.store.remove, files.root.name)
            return
        state.phase = "deleting"
        await asyncio.to_thread(self.store.write, state)
        await self._destroy(state, self.store.files(server_id))

    async def _destroy(self, state: VmState, files: VmFiles) -> None:
        await qemu.stop(files, state.qmp_socket)
        await asyncio.to_thread(self.store.remove, state.id, state.qmp_socket)

    async def create(self, request: CreateServerRequest) -> Server:
        """Overlay, seed, free port, QEMU started daemonized; returns once QEMU runs.

        A failure at any step stops QEMU and deletes the folder again before raising.
        """
        labels = {**request.labels, LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE}
        labels.setdefault(LABEL_WORKSPACE, request.name)
        if request.region not in (None, "", REGION_ID):
            raise InvalidInput(
                f"local VMs run on this computer, not in {request.region!r}",
                hint=f"Use the region {REGION_ID!r}",
                provider=KIND,
            )
        async with self._lock:
            for server in await self.list():
                if server.name == request.name:
                    raise Conflict(f"a local VM named {request.name!r} exists", provider=KIND)
            state, files = await asyncio.to_thread(self._allocate, request, labels)
        try:
            await asyncio.to_thread(self._build_and_start, state, files, request.user_data)
        except BaseException:
            await self._destroy(state, files)
            raise
        return self._server(state, ServerStatus.RUNNING, state.accel_note)

    def _allocate(
        self, request: CreateServerRequest, labels: dict[str, str]
    ) -> tuple[VmState, VmFiles]:
        """Pick size, image and accelerator; make the folder with ``vm.json`` (phase creating)."""
        qemu_bin = self._qemu()
        find_qemu_img(qemu_bin)
        preset = self._preset(request.size, self._host())
        boot = self.images.boot_image(request.image) if request.image else self._image(None)
        verdict = self._accel(qemu_bin)
        vm_id = f"{request.name.removeprefix('bivy-')[:40]}-{secrets.token_hex(4)}"
        files = self.store.make(vm_id)
        state = VmState(
            id=vm_id,
            name=request.name,
            labels=labels,
            size=preset.name,
            cpus=preset.cpus,
            memory_mb=preset.memory_gb * 1024,
            disk_gb=preset.disk_gb,
            accel=verdict.accel,
            accel_note=verdict.note,
            arch=host_arch(),
            qmp_socket=str(files.default_qmp_socket()),
            created_at=utcnow(),
            image=boot,
        )
        self.store.write(state)
        return state, files

    def _build_and_start(self, state: VmState, files: VmFiles, user_data: str) -> None:
        qemu_bin = self._qemu()
        qemu.create_overlay(find_qemu_img(qemu_bin), files, state)
        build_seed(files.seed, user_data, meta_data(state.id, state.name))
        firmware = (
            qemu.aarch64_firmware() if state.arch == "aarch64" and not state.image.kernel else None
        )
        error: BivyError | None = None
        for _ in range(START_ATTEMPTS):
            state.ssh_port = qemu.free_port()
            self.store.write(state)
            try:
                qemu.start(qemu.vm_command(qemu_bin, state, files, firmware), files)
            except BivyError as exc:
                error = exc  # most likely the port was taken in between: another one
                continue
            state.phase = "started"
            self.store.write(state)
            return
        assert error is not None
        raise error

    # -- on the VM -----------------------------------------------------------------------------

    def self_delete_script(self) -> str:
        return SELF_DELETE_SCRIPT


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


__all__ = ["LocalProvider", "fitting_presets"]
