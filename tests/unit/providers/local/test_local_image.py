"""Base image (served SHA256SUMS, bad checksum refused, progress, cache, user images and
manifests), the NoCloud seed, and the accelerator verdict logic."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.domain import CreateServerRequest
from app.errors import BivyError, InvalidInput, ProviderUnavailable
from app.providers.local import LocalProvider
from app.providers.local import accel as accel_mod
from app.providers.local.host import HostResources
from app.providers.local.image import (
    disk_format,
    parse_sums,
    ubuntu_image,
    ubuntu_image_name,
    user_image,
)
from app.providers.local.seed import build_seed, meta_data, read_seed, volume_label

IMAGE = b"QFI\xfb" + bytes(range(256)) * 4096  # ~1 MiB, looks like qcow2
NAME = ubuntu_image_name("x86_64")


class ImageServer:
    """An HTTP server on 127.0.0.1 serving a fake cloud image and its SHA256SUMS."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                body = server.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/noble/current/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, image: bytes, digest: str | None = None) -> None:
        digest = digest or hashlib.sha256(image).hexdigest()
        other = hashlib.sha256(b"other").hexdigest()
        self.files[NAME] = image
        self.files["SHA256SUMS"] = (
            f"{other} *noble-server-cloudimg-arm64.img\n{digest} *{NAME}\n"
        ).encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served() -> Iterator[ImageServer]:
    server = ImageServer()
    try:
        yield server
    finally:
        server.close()


def test_download_verified_cached_and_progress_reported(
    tmp_path: Path, served: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.publish(IMAGE)
    monkeypatch.setenv("BIVY_LOCAL_IMAGE_BASE_URL", served.url)
    seen: list[tuple[int, int]] = []
    image = ubuntu_image(tmp_path / "images", "x86_64", progress=lambda d, t: seen.append((d, t)))
    assert image.disk == tmp_path / "images" / NAME
    assert image.disk.read_bytes() == IMAGE and image.format == "qcow2"
    assert seen[0] == (0, len(IMAGE)) and seen[-1] == (len(IMAGE), len(IMAGE))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 2
    assert served.hits == ["/noble/current/SHA256SUMS", f"/noble/current/{NAME}"]
    # Cached: no second download.
    again = ubuntu_image(tmp_path / "images", "x86_64")
    assert again.disk == image.disk and len(served.hits) == 2
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f".{NAME}.lock", NAME]


def test_bad_checksum_is_refused_and_nothing_kept(
    tmp_path: Path, served: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.publish(IMAGE, digest=hashlib.sha256(b"something else").hexdigest())
    monkeypatch.setenv("BIVY_LOCAL_IMAGE_BASE_URL", served.url)
    with pytest.raises(BivyError, match="does not match the published SHA256SUMS"):
        ubuntu_image(tmp_path / "images", "x86_64")
    assert not (tmp_path / "images" / NAME).exists()
    assert not (tmp_path / "images" / f"{NAME}.part").exists()


def test_unlisted_image_and_unreachable_server(
    tmp_path: Path, served: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.files["SHA256SUMS"] = b"0" * 64 + b" *something-else.img\n"
    with pytest.raises(ProviderUnavailable, match="does not list"):
        ubuntu_image(tmp_path / "images", "x86_64", base_url=served.url)
    served.close()
    with pytest.raises(ProviderUnavailable, match="cannot download") as info:
        ubuntu_image(tmp_path / "images", "x86_64", base_url=served.url)
    assert "BIVY_LOCAL_IMAGE" in (info.value.hint or "")


def test_parse_sums() -> None:
    digest = "a" * 64
    text = f"{digest} *{NAME}\n{'B' * 64}  plain.img\nnot a line\n"
    assert parse_sums(text) == {NAME: digest, "plain.img": "b" * 64}


async def test_prepare_reports_the_download(
    tmp_path: Path, served: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.publish(IMAGE)
    monkeypatch.setenv("BIVY_LOCAL_IMAGE_BASE_URL", served.url)
    local = LocalProvider({"accel": "tcg"}, root=tmp_path / "local")
    monkeypatch.setattr("app.providers.local.provider.find_qemu", lambda *_: Path("/bin/true"))
    monkeypatch.setattr("app.providers.local.provider.find_qemu_img", lambda *_: Path("/bin/true"))
    seen: list[tuple[str, float | None]] = []
    request = CreateServerRequest(
        name="bivy-demo",
        region="local",
        size="local-1cpu-2gb",
        ssh_public_key="ssh-ed25519 AAAA x",
        labels={},
        user_data="",
    )
    await local.prepare(request, lambda detail, fraction: seen.append((detail, fraction)))
    downloads = [(d, f) for d, f in seen if d.startswith("Downloading")]
    assert downloads and downloads[-1][1] == 1.0
    assert any("slow: no hardware virtualisation" in d.lower() for d, _ in seen)
    assert seen[-1][0].startswith("Base image: Ubuntu 24.04")


# -- user images and manifests -------------------------------------------------------------------


def test_user_image_and_format(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 1024)
    qcow = tmp_path / "disk.qcow2"
    qcow.write_bytes(IMAGE[:4096])
    assert disk_format(raw) == "raw" and disk_format(qcow) == "qcow2"
    assert user_image(str(qcow)).disk == qcow and user_image(str(qcow)).kernel is None
    with pytest.raises(InvalidInput, match="does not exist"):
        user_image(str(tmp_path / "missing.qcow2"))


def test_manifest_paths_are_relative_to_it(tmp_path: Path) -> None:
    folder = tmp_path / "e2e"
    folder.mkdir()
    for name in ("rootfs.raw", "vmlinuz", "initrd.img"):
        (folder / name).write_bytes(b"x")
    manifest = folder / "image.json"
    spec = {"disk": "rootfs.raw", "format": "raw", "kernel": "vmlinuz", "initrd": "initrd.img",
            "append": "root=/dev/vda rw"}  # fmt: skip
    manifest.write_text(json.dumps(spec))
    image = user_image(str(manifest))
    assert image.disk == folder / "rootfs.raw" and image.format == "raw"
    assert image.kernel == folder / "vmlinuz" and image.initrd == folder / "initrd.img"
    assert image.append == "root=/dev/vda rw" and image.source == str(manifest)
    (folder / "vmlinuz").unlink()
    with pytest.raises(InvalidInput, match="kernel"):
        user_image(str(manifest))
    # A builder's own keys are ignored; a manifest without a disk is refused.
    manifest.write_text(json.dumps({"disk": "rootfs.raw", "recipe": "253374734aa48ca3"}))
    assert user_image(str(manifest)).disk == folder / "rootfs.raw"
    manifest.write_text(json.dumps({"kernel": "vmlinuz"}))
    with pytest.raises(InvalidInput, match="cannot be used"):
        user_image(str(manifest))


# -- seed ----------------------------------------------------------------------------------------


def test_seed_carries_the_user_data_unchanged(tmp_path: Path) -> None:
    user_data = "#cloud-config\nwrite_files:\n- path: /etc/x\n  content: 'é ü \"quoted\"'\n" * 50
    seed = tmp_path / "vm" / "seed.iso"
    seed.parent.mkdir()
    build_seed(seed, user_data, meta_data("demo-0a1b2c3d", "bivy-demo"))
    files = read_seed(seed)
    assert files["user-data"] == user_data.encode()
    meta = json.loads(files["meta-data"])
    assert meta == {"instance-id": "demo-0a1b2c3d", "local-hostname": "bivy-demo"}
    assert volume_label(seed) == "cidata"
    assert seed.stat().st_mode & 0o777 == 0o600  # it carries secrets
    assert sorted(p.name for p in seed.parent.iterdir()) == ["seed.iso"]  # no temp file left


# -- accelerator ---------------------------------------------------------------------------------


def test_probe_guest_is_a_boot_sector() -> None:
    sector = accel_mod.probe_boot_sector()
    assert len(sector) == 1 << 20 and sector[510:512] == b"\x55\xaa"
    assert accel_mod.PROBE_MARKER in sector[:510]


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, float]]:
    results: dict[str, tuple[str, float]] = {"tcg": ("", 0.5)}
    calls: list[str] = []

    def run(qemu: Path, accel: str, arch: str, timeout: float) -> tuple[str, float]:
        calls.append(accel)
        return results[accel]

    monkeypatch.setattr(accel_mod, "run_probe", run)
    monkeypatch.setattr(accel_mod, "_version", lambda _q: "QEMU emulator version 9.9.9")
    monkeypatch.setattr(accel_mod, "candidates", lambda _p=None: ["kvm"])
    results["calls"] = calls  # type: ignore[assignment]
    return results


def test_kvm_that_works_is_used_and_cached(tmp_path: Path, fake_probe: dict) -> None:  # type: ignore[type-arg]
    fake_probe["kvm"] = ("", 0.3)
    cache = tmp_path / "accel.json"
    verdict = accel_mod.detect(Path("/bin/true"), "x86_64", cache)
    assert verdict == accel_mod.AccelVerdict("kvm") and not verdict.slow
    assert fake_probe["calls"] == ["tcg", "kvm"]
    again = accel_mod.detect(Path("/bin/true"), "x86_64", cache)
    assert again == verdict and fake_probe["calls"] == ["tcg", "kvm"]  # from the cache
    assert "9.9.9" in next(iter(json.loads(cache.read_text())))


def test_kvm_that_fails_or_crawls_means_tcg_with_a_notice(
    tmp_path: Path,
    fake_probe: dict,  # type: ignore[type-arg]
) -> None:
    fake_probe["kvm"] = ("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0", 0.1)
    verdict = accel_mod.detect(Path("/bin/true"), "x86_64", tmp_path / "a.json")
    assert verdict.accel == "tcg" and verdict.slow
    assert verdict.note.startswith("slow: no hardware virtualisation")
    assert "failed to set MSR" in verdict.note
    fake_probe["kvm"] = ("", 11.8)  # ran, but slower than emulation (nested KVM here)
    verdict = accel_mod.detect(Path("/bin/true"), "x86_64", tmp_path / "b.json")
    assert verdict.accel == "tcg" and "took 11.8 s, emulation 0.5 s" in verdict.note


def test_forced_accelerator_and_broken_qemu(tmp_path: Path, fake_probe: dict) -> None:  # type: ignore[type-arg]
    assert accel_mod.detect(Path("/bin/true"), "x86_64", tmp_path / "a.json",
                            forced="kvm").accel == "kvm"  # fmt: skip
    assert fake_probe["calls"] == []
    forced = accel_mod.detect(Path("/bin/true"), "x86_64", tmp_path / "a.json", forced="tcg")
    assert forced.slow and "slow" in forced.note
    with pytest.raises(InvalidInput, match="unknown accelerator"):
        accel_mod.detect(Path("/bin/true"), "x86_64", tmp_path / "a.json", forced="xen")
    fake_probe["tcg"] = ("qemu-system-x86_64: cannot set up guest memory", 0.1)
    with pytest.raises(InvalidInput, match="cannot run a virtual machine"):
        accel_mod.detect(Path("/bin/true"), "x86_64", tmp_path / "c.json")


async def test_validate_says_what_runs_the_vms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: HostResources
) -> None:
    monkeypatch.setattr("app.providers.local.provider.find_qemu", lambda *_: Path("/bin/true"))
    monkeypatch.setattr("app.providers.local.provider.find_qemu_img", lambda *_: Path("/bin/true"))
    info = await LocalProvider({"accel": "tcg"}, root=tmp_path).validate()
    assert info.provider == "local" and "emulation" in info.description
    assert "slow: no hardware virtualisation" in info.description
    monkeypatch.setattr(
        "app.providers.local.provider.find_qemu",
        lambda *_: (_ for _ in ()).throw(
            InvalidInput("QEMU (qemu-system-x86_64) is not installed")
        ),
    )
    with pytest.raises(InvalidInput, match="not installed"):
        await LocalProvider({}, root=tmp_path).validate()
