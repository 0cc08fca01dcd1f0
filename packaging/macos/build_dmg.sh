#!/usr/bin/env bash
# Builds Bivy.app (PyInstaller BUNDLE in packaging/bivy.spec) and wraps it in a compressed .dmg.
# Runs on macOS only (hdiutil, codesign); CI's macOS runner calls it. Not buildable on Linux.
#   bash packaging/macos/build_dmg.sh
# Signing/notarisation: set CODESIGN_IDENTITY to sign; unsigned builds open with right-click → Open.
set -euo pipefail
cd "$(dirname "$0")/../.."
python packaging/build.py --no-packages
version="$(python -c 'import app; print(app.__version__)')"
app="packaging/dist/Bivy.app"
test -d "$app" || { echo "no $app: the spec builds it on macOS only" >&2; exit 1; }
if [ -n "${CODESIGN_IDENTITY:-}" ]; then
  codesign --deep --force --options runtime --sign "$CODESIGN_IDENTITY" "$app"
fi
"$app/Contents/MacOS/bivy" --smoke-test
stage="$(mktemp -d)"
cp -R "$app" "$stage/"
ln -s /Applications "$stage/Applications"
dmg="packaging/dist/bivy-${version}-macos-$(uname -m).dmg"
hdiutil create -volname "Bivy ${version}" -srcfolder "$stage" -ov -format UDZO "$dmg"
rm -rf "$stage"
echo "dmg: $dmg ($(du -h "$dmg" | cut -f1))"
