#!/bin/bash
# Starts ttyd on the loopback only (the app reaches it through an SSH forward), writable, with
# origin checks and basic auth as a second lock. With -a a client picks its session with the URL's
# `?arg=NAME` (ttyd-session checks the name; no arg: main); the clients of one session share it.
set -euo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env
# After a reboot the devcontainer is stopped (it has no restart policy): start it again through
# the devcontainer CLI, so its postStartCommand runs as after `devcontainer up`.
"$BIVY_LIB_DIR/devcontainer-up" --start
# ttyd takes its password only as an argument, so host processes can read it from ps; that is
# root and dev (who has sudo) — containers have their own process namespace and cannot.
exec ttyd -i lo -p "${BIVY_TTYD_PORT:-{{ ttyd_port }}}" -W -O -a -m 8 -c "bivy:$BIVY_TTYD_PASSWORD" \
    -t disableLeaveAlert=true -t "titleFixed=$BIVY_NAME" "$BIVY_LIB_DIR/ttyd-session"
