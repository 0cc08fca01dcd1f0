"""Renders resources/icons/bivy.svg into the PNG sizes, .ico and .icns each OS needs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication, QImage, QImageWriter, QPainter
from PySide6.QtSvg import QSvgRenderer

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
#: hicolor sizes for Linux; Windows .ico takes up to 256; macOS .icns up to 512 (1024 @2x).
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render(svg: Path, size: int) -> QImage:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    image = QImage(QSize(size, size), QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def write(image: QImage, path: Path, fmt: str) -> None:
    writer = QImageWriter(str(path), fmt.encode())
    if not writer.write(image):
        raise SystemExit(f"cannot write {path}: {writer.errorString()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ICONS / "generated")
    args = parser.parse_args()
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    svg = ICONS / "bivy.svg"
    for size in PNG_SIZES:
        write(render(svg, size), out / f"bivy-{size}.png", "png")
    # Qt's ico and icns writers take the largest image; one 256/512 master each is what the OS
    # scales from when no smaller size is embedded.
    write(render(svg, max(ICO_SIZES)), out / "bivy.ico", "ico")
    write(render(svg, 512), out / "bivy.icns", "icns")
    for state in ("idle", "working", "attention"):
        write(render(ICONS / f"tray-{state}.svg", 64), out / f"tray-{state}-64.png", "png")
    print(f"icons written to {out}")
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
