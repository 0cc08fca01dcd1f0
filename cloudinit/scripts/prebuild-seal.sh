#!/bin/bash
# Bivy prebuild seal (issue 14; notes/CONTRACTS2.md): run by the app as root (`sudo -n`) on a
# builder VM whose bootstrap reached phase "prebuilt", just before the provider snapshots it.
# Leaves what a workspace needs (the tools, the clone, Docker's images and the devcontainer with
# the agent installed, /var/lib/bivy/prebuild.json) and removes what belongs to this VM or could
# hold a secret, so that cloud-init runs again from scratch on every VM booted from the image:
# logs, the machine id (emptied: a new one at the next boot, which is not "first boot", so
# systemd's presets enable nothing), SSH host keys, cloud-init's state, apt lists and caches, npm
# caches (host and container), dangling Docker build cache, /var/lib/bivy but prebuild.json,
# /etc/bivy, dev's authorized_keys and the bundle inbox. The idle and lifetime timers are
# disabled (the new user data enables them again) so none fires before cloud-init has written
# the new VM's settings. Prints "sealed", then powers off 3 s later.
#
# For tests only: BIVY_*_DIR (lib.sh), BIVY_SEAL_ROOT (a throwaway root holding /etc, /home,
# /root and /var), BIVY_SEAL_FORCE=1 (seal in any phase).
set -Eeuo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
ROOT="${BIVY_SEAL_ROOT:-}"
TIMERS=(bivy-idle.timer bivy-lifetime.timer) # a builder has no backups

phase=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("phase") or "")' \
    "$BIVY_STATE_DIR/status.json" 2>/dev/null || true)
if [ "$phase" != prebuilt ] && [ "${BIVY_SEAL_FORCE:-}" != 1 ]; then
    echo "not a finished prebuild (phase: ${phase:-unknown}); nothing sealed" >&2
    exit 1
fi
[ -s "$BIVY_STATE_DIR/prebuild.json" ] || { echo "no prebuild.json; nothing sealed" >&2; exit 1; }

# A seal that fails half-way leaves a VM that still deletes itself when forgotten.
trap 'systemctl enable --now "${TIMERS[@]}" >/dev/null 2>&1 || true; echo "sealing failed on line $LINENO" >&2' ERR
systemctl disable --now "${TIMERS[@]}" >/dev/null 2>&1 || true

# The devcontainer: its package caches go, then it stops (it is started again, or replaced when
# its config changed, by the first workspace's devcontainer-up).
if [ -r "$BIVY_STATE_DIR/container.env" ]; then
    # shellcheck source=/dev/null
    . "$BIVY_STATE_DIR/container.env"
    # shellcheck disable=SC2016  # expanded inside the container
    docker exec -u root "$BIVY_CONTAINER_ID" sh -c \
        'rm -rf /root/.npm /root/.cache/node-gyp /tmp/* /var/tmp/* 2>/dev/null; for h in /home/*; do rm -rf "$h/.npm/_cacache" "$h/.npm/_logs"; done; true' ||
        echo "could not clean the devcontainer's caches" >&2
    docker stop -t 10 "$BIVY_CONTAINER_ID" >/dev/null || echo "could not stop the devcontainer" >&2
fi
# Only dangling build cache: what the images were built from stays, so a changed Dockerfile
# rebuilds from its unchanged layers.
docker builder prune -f >/dev/null 2>&1 || true
docker image prune -f >/dev/null 2>&1 || true

# cloud-init writes the hooks again: they must not be immutable any more.
chattr -R -i "$BIVY_LIB_DIR/hook" 2>/dev/null || true
rm -rf "$ROOT/home/dev/.ssh/authorized_keys" "$ROOT/home/dev/bivy-incoming" "$ROOT/home/dev/.npm" \
    "$ROOT/root/.npm" "$ROOT/home/dev/.bash_history" "$ROOT/root/.bash_history" \
    "$ROOT/home/dev/.sudo_as_admin_successful"
rm -f "$ROOT"/etc/ssh/ssh_host_*
apt-get clean >/dev/null 2>&1 || true
find "$ROOT/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf {} + 2>/dev/null || true
cloud-init clean --logs --seed
# Last, as a failure before this point leaves a VM that can still delete itself.
find "$BIVY_STATE_DIR" -mindepth 1 -maxdepth 1 ! -name prebuild.json -exec rm -rf {} +
find "$BIVY_ETC_DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
: >"$ROOT/etc/machine-id"
if [ -f "$ROOT/var/lib/dbus/machine-id" ] && [ ! -L "$ROOT/var/lib/dbus/machine-id" ]; then
    rm -f "$ROOT/var/lib/dbus/machine-id"
fi
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
find "$ROOT/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete 2>/dev/null || true
find "$ROOT/var/log" -type f ! -path '*/journal/*' -exec truncate -s 0 {} + 2>/dev/null || true
# Unused blocks need not be in the snapshot (where the disk passes discards through).
fstrim -a >/dev/null 2>&1 || true
sync
trap - ERR
echo sealed
systemd-run --on-active=3 --timer-property=AccuracySec=100ms systemctl poweroff >/dev/null
