"""The local provider's image calls (prebuilds): power-off, flatten a VM's disk into an image,
get/list/delete images. A mixin of ``LocalProvider`` (kept apart for the file's length)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, Price, ProviderImage
from app.errors import Conflict, NotFound
from app.providers.local import qemu
from app.providers.local.client import VmFiles, VmStore
from app.providers.local.host import find_qemu_img
from app.providers.local.images import CONVERT_TIMEOUT, DISK_FILE, ImageStore, LocalImage
from app.providers.local.models import KIND, REGION_ID, VmState

__all__ = ["LocalImages"]


class LocalImages:
    """Image calls over ``store`` (VM folders) and ``images`` (image folders)."""

    store: VmStore
    images: ImageStore
    #: Local images cost nothing (the provider's zero price).
    image_price: Price

    def _qemu(self) -> Path:
        raise NotImplementedError

    # -- images (prebuilds) --------------------------------------------------------------------

    async def power_off(self, server_id: str) -> None:
        """Stop QEMU (QMP quit, then signals): the guest sealed and synced itself already."""
        state = await asyncio.to_thread(self.store.read, server_id)
        await qemu.stop(self.store.files(server_id), state.qmp_socket)

    async def create_image(
        self, server_id: str, *, name: str, labels: Mapping[str, str]
    ) -> ProviderImage:
        """Flatten the powered-off VM's disk into ``images/<id>/disk.qcow2`` (blocking until
        it is written, so the image comes back available)."""
        state = await asyncio.to_thread(self.store.read, server_id)
        files = self.store.files(server_id)
        pid = await asyncio.to_thread(qemu.running_pid, files)
        if state.phase != "started" or pid is not None:
            raise Conflict(
                f"the local VM {server_id} must be powered off to be imaged", provider=KIND
            )
        image = LocalImage(
            id=self.images.new_id(),
            name=name,
            labels={**labels, LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE},
            source_vm=server_id,
        )
        await asyncio.to_thread(self.images.make, image)
        try:
            image = await asyncio.to_thread(self._flatten, image, state, files)
        except BaseException:
            await asyncio.to_thread(self.images.remove, image.id)
            raise
        return self._provider_image(image)

    def _flatten(self, image: LocalImage, state: VmState, files: VmFiles) -> LocalImage:
        qemu_img = find_qemu_img(self._qemu())
        folder = self.images.folder(image.id)
        part = folder / (DISK_FILE + ".part")
        qemu.run_tool(
            [str(qemu_img), "convert", "-q", "-f", "qcow2", "-O", "qcow2", str(files.disk),
             str(part)],
            "flatten the VM's disk into an image",
            timeout=CONVERT_TIMEOUT,
        )  # fmt: skip
        os.replace(part, folder / DISK_FILE)
        image = self.images.copy_boot_files(image, state.image)
        image = image.model_copy(
            update={
                "status": "available",
                "virtual_size": qemu.virtual_size(qemu_img, folder / DISK_FILE, "qcow2"),
                "size_bytes": self.images.disk_usage(image.id),
            }
        )
        self.images.write(image)
        return image

    def _provider_image(self, image: LocalImage) -> ProviderImage:
        return ProviderImage(
            provider=KIND,
            id=image.id,
            name=image.name,
            status=image.image_status,
            region=REGION_ID,
            size_gb=round(image.size_bytes / 1e9, 2),
            created_at=image.created_at,
            labels=dict(image.labels),
            monthly_price=self.image_price,
        )

    async def get_image(self, image_id: str) -> ProviderImage:
        return self._provider_image(await asyncio.to_thread(self.images.read, image_id))

    async def list_images(self) -> builtins.list[ProviderImage]:
        out = []
        for image_id in await asyncio.to_thread(self.images.ids):
            try:
                image = await asyncio.to_thread(self.images.read, image_id)
            except NotFound:
                continue
            if image.labels.get(LABEL_MANAGED_BY) == LABEL_MANAGED_BY_VALUE:
                out.append(self._provider_image(image))
        return out

    async def delete_image(self, image_id: str) -> None:
        """Delete the image's folder; refused while a VM's disk is an overlay on it."""
        try:
            folder = self.images.folder(image_id)
        except NotFound:
            return
        for vm_id in await asyncio.to_thread(self.store.ids):
            with contextlib.suppress(NotFound):
                vm = await asyncio.to_thread(self.store.read, vm_id)
                if vm.image.disk.parent == folder:
                    raise Conflict(
                        f"the local VM {vm.name} was created from the image {image_id}",
                        hint="Delete that workspace first",
                        provider=KIND,
                    )
        await asyncio.to_thread(self.images.remove, image_id)
