"""The local provider's images (prebuilds): ``<data_dir>/local/images/<id>/``.

An image is the powered-off VM's disk flattened into one standalone qcow2 (``qemu-img convert``
reads the overlay through its backing chain), plus ``image.json``: its labels, size, and — for a
VM booted with a direct kernel (the e2e guest's manifest) — that kernel, initrd and command line,
copied beside the disk so the image does not depend on the base it came from. A VM created from
the image gets an overlay on ``disk.qcow2``, as it would on the base image; so an image in use
cannot be deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from app.domain import ImageStatus, utcnow
from app.errors import BivyError, NotFound
from app.providers.local.models import KIND, BootImage

_IMAGE_ID = re.compile(r"^img-[a-z0-9]{4,40}$")
IMAGE_FILE = "image.json"
DISK_FILE = "disk.qcow2"
#: How long flattening a disk may take (a large devcontainer image on a slow disk).
CONVERT_TIMEOUT = 3600.0


class LocalImage(BaseModel):
    """One image's ``image.json``.

    Attributes:
        id: the folder name (``img-<hex>``); name: the name given at ``create_image``.
        labels: Bivy's labels; status: ``creating`` while the disk is being written.
        size_bytes: the flattened disk's size on disk; virtual_size: its size as a disk.
        kernel / initrd / append: direct-kernel boot (file names inside the folder).
        source_vm: the VM it was made from.
    """

    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    status: Literal["creating", "available", "failed"] = "creating"
    created_at: datetime = Field(default_factory=utcnow)
    size_bytes: int = 0
    virtual_size: int = 0
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    source_vm: str = ""

    @property
    def image_status(self) -> ImageStatus:
        return {
            "creating": ImageStatus.CREATING,
            "available": ImageStatus.AVAILABLE,
            "failed": ImageStatus.FAILED,
        }[self.status]


class ImageStore:
    """The image folders under ``root`` (``<data_dir>/local/images``, which also caches the
    Ubuntu base image as a plain file)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, image_id: str) -> Path:
        if not _IMAGE_ID.match(image_id):
            raise NotFound(f"there is no local image {image_id!r}", provider=KIND)
        return self.root / image_id

    def new_id(self) -> str:
        return f"img-{secrets.token_hex(5)}"

    def ids(self) -> list[str]:
        try:
            entries = sorted(self.root.iterdir())
        except FileNotFoundError:
            return []
        return [e.name for e in entries if e.is_dir() and _IMAGE_ID.match(e.name)]

    def read(self, image_id: str) -> LocalImage:
        path = self.folder(image_id) / IMAGE_FILE
        try:
            return LocalImage.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"there is no local image {image_id!r}", provider=KIND) from None
        except (OSError, ValidationError, ValueError):
            raise NotFound(
                f"the local image {image_id!r} has an unreadable {IMAGE_FILE}", provider=KIND
            ) from None

    def write(self, image: LocalImage) -> None:
        folder = self.folder(image.id)
        tmp = folder / f".{IMAGE_FILE}.tmp"
        try:
            tmp.write_text(image.model_dump_json(indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, folder / IMAGE_FILE)
        except OSError as exc:
            raise BivyError(
                f"cannot write {folder / IMAGE_FILE}: {exc.strerror or type(exc).__name__}",
                hint="Check the free space of the data folder",
                provider=KIND,
            ) from None

    def make(self, image: LocalImage) -> Path:
        folder = self.folder(image.id)
        folder.mkdir(parents=True, mode=0o700)
        self.write(image)
        return folder

    def copy_boot_files(self, image: LocalImage, boot: BootImage) -> LocalImage:
        """Copy a direct-kernel base's kernel and initrd into the image's folder."""
        if boot.kernel is None:
            return image
        folder = self.folder(image.id)
        update: dict[str, object] = {"append": boot.append}
        for key, source in (("kernel", boot.kernel), ("initrd", boot.initrd)):
            if source is None:
                continue
            target = folder / key
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise BivyError(
                    f"cannot copy the {key} {source} into the image: "
                    f"{exc.strerror or type(exc).__name__}",
                    provider=KIND,
                ) from None
            update[key] = key
        return image.model_copy(update=update)

    def boot_image(self, image_id: str) -> BootImage:
        """What a VM created from ``image_id`` boots: an overlay on its disk (and its kernel)."""
        image = self.read(image_id)
        if image.status != "available":
            raise NotFound(f"the local image {image_id} is {image.status}", provider=KIND)
        folder = self.folder(image_id)
        return BootImage(
            disk=folder / DISK_FILE,
            format="qcow2",
            kernel=folder / image.kernel if image.kernel else None,
            initrd=folder / image.initrd if image.initrd else None,
            append=image.append,
            source=f"prebuild image {image_id}",
        )

    def remove(self, image_id: str) -> None:
        folder = self.folder(image_id)
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BivyError(
                f"cannot delete {folder}: {exc.strerror or type(exc).__name__}", provider=KIND
            ) from None

    def disk_usage(self, image_id: str) -> int:
        """Bytes the image's files take on disk (sparse files count what is allocated)."""
        total = 0
        with contextlib.suppress(OSError):
            for path in self.folder(image_id).iterdir():
                with contextlib.suppress(OSError):
                    st = path.stat()
                    total += min(st.st_size, getattr(st, "st_blocks", 0) * 512 or st.st_size)
        return total
