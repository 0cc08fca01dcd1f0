"""The base image local VMs boot: the user's own (a disk or a ``.json`` manifest), or the
official Ubuntu 24.04 cloud image, downloaded once, checked against the published SHA256SUMS
and cached under ``<data_dir>/local/images``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx
from pydantic import ValidationError

from app.errors import BivyError, InvalidInput, ProviderUnavailable
from app.providers.local.host import UBUNTU_ARCH
from app.providers.local.models import KIND, BootImage, ImageManifest

#: Where the official image and its SHA256SUMS are (``BIVY_LOCAL_IMAGE_BASE_URL`` overrides).
DEFAULT_BASE_URL = "https://cloud-images.ubuntu.com/noble/current/"
IMAGE_SOURCE = "Ubuntu 24.04 cloud image"
QCOW2_MAGIC = b"QFI\xfb"
CHUNK = 1 << 20

#: ``progress(done_bytes, total_bytes)``: total is 0 while unknown.
DownloadProgress = Callable[[int, int], None]

_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


def ubuntu_image_name(arch: str) -> str:
    return f"noble-server-cloudimg-{UBUNTU_ARCH[arch]}.img"


def disk_format(path: Path) -> Literal["qcow2", "raw"]:
    """``qcow2`` when the file starts with qcow2's magic, else ``raw``."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the image {path}: {exc.strerror or type(exc).__name__}", provider=KIND
        ) from None
    return "qcow2" if head == QCOW2_MAGIC else "raw"


def _existing(path: Path, what: str, origin: Path) -> Path:
    if not path.is_file():
        raise InvalidInput(f"the {what} {path} named by {origin} does not exist", provider=KIND)
    return path


def load_manifest(path: Path) -> BootImage:
    """A ``.json`` manifest → ``BootImage`` (paths relative to the manifest's folder)."""
    try:
        manifest = ImageManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else type(exc).__name__
        raise InvalidInput(
            f"the image manifest {path} cannot be used: {detail}",
            hint='It is JSON: {"disk": "...", "format": "qcow2|raw", "kernel": "...", '
            '"initrd": "...", "append": "..."}',
            provider=KIND,
        ) from None
    base = path.parent

    def resolve(value: str | None, what: str) -> Path | None:
        return None if not value else _existing((base / value).resolve(), what, path)

    disk = resolve(manifest.disk, "disk")
    assert disk is not None
    return BootImage(
        disk=disk,
        format=manifest.format,
        kernel=resolve(manifest.kernel, "kernel"),
        initrd=resolve(manifest.initrd, "initrd"),
        append=manifest.append,
        source=str(path),
    )


def user_image(value: str) -> BootImage:
    """The image the user named (``BIVY_LOCAL_IMAGE`` or the account's image field)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = path.resolve()
    if not path.is_file():
        raise InvalidInput(
            f"the local image {path} does not exist",
            hint="Set BIVY_LOCAL_IMAGE (or the image field of the local account) to a qcow2 or "
            "raw disk image, or a .json manifest; leave it empty for Ubuntu 24.04",
            provider=KIND,
        )
    if path.suffix.lower() == ".json":
        return load_manifest(path)
    return BootImage(disk=path, format=disk_format(path), source=str(path))


def parse_sums(text: str) -> dict[str, str]:
    """``SHA256SUMS`` → file name → lower-case hex digest."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUMS_LINE.match(line.strip())
        if match:
            sums[match.group(2)] = match.group(1).lower()
    return sums


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (two creates must not download the same image at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no local provider there anyway
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ubuntu_image(
    images_dir: Path,
    arch: str,
    *,
    base_url: str = "",
    progress: DownloadProgress | None = None,
    transport: httpx.BaseTransport | None = None,
) -> BootImage:
    """The cached Ubuntu image, downloaded and verified first when absent (blocking).

    The download goes to a ``.part`` file hashed on the way; only a file whose SHA256 matches
    the published ``SHA256SUMS`` is renamed into place, anything else is deleted and refused.
    """
    name = ubuntu_image_name(arch)
    target = images_dir / name
    if target.is_file():
        return BootImage(disk=target, format=disk_format(target), source=IMAGE_SOURCE)
    base = (base_url or os.environ.get("BIVY_LOCAL_IMAGE_BASE_URL") or DEFAULT_BASE_URL).rstrip(
        "/"
    ) + "/"
    with _locked(images_dir / f".{name}.lock"):
        if target.is_file():  # another process finished it while we waited
            return BootImage(disk=target, format=disk_format(target), source=IMAGE_SOURCE)
        try:
            with httpx.Client(transport=transport, timeout=httpx.Timeout(60.0, connect=15.0),
                              follow_redirects=True) as client:  # fmt: skip
                expected = _expected_digest(client, base, name)
                _download(client, base + name, target, expected, progress)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"cannot download the {IMAGE_SOURCE} from {base}: {type(exc).__name__}",
                hint="Check the connection, or set BIVY_LOCAL_IMAGE to an image on this computer",
                provider=KIND,
            ) from None
    return BootImage(disk=target, format=disk_format(target), source=IMAGE_SOURCE)


def _expected_digest(client: httpx.Client, base: str, name: str) -> str:
    response = client.get(base + "SHA256SUMS")
    response.raise_for_status()
    digest = parse_sums(response.text).get(name)
    if digest is None:
        raise ProviderUnavailable(f"{base}SHA256SUMS does not list {name}", provider=KIND)
    return digest


def _download(
    client: httpx.Client,
    url: str,
    target: Path,
    expected: str,
    progress: DownloadProgress | None,
) -> None:
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    done = 0
    try:
        with client.stream("GET", url) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0)
            if progress is not None:
                progress(0, total)
            with part.open("wb") as handle:
                for chunk in response.iter_bytes(CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        if digest.hexdigest() != expected:
            raise BivyError(
                f"the downloaded {target.name} does not match the published SHA256SUMS "
                "(it was deleted)",
                hint="Try again later; if it persists, the download is being tampered with",
                provider=KIND,
            )
        os.replace(part, target)
    except OSError as exc:
        raise BivyError(
            f"cannot save {target}: {exc.strerror or type(exc).__name__}",
            hint="Check the free space of the data folder",
            provider=KIND,
        ) from None
    finally:
        part.unlink(missing_ok=True)
