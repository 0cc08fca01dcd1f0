# shellcheck shell=bash
# Bivy VM helpers shared by the bootstrap, the idle monitor and the ttyd launcher.
# Paths may be moved with BIVY_*_DIR for tests only; the systemd units never set them.
BIVY_STATE_DIR="${BIVY_STATE_DIR:-{{ state_dir }}}"
BIVY_LIB_DIR="${BIVY_LIB_DIR:-{{ lib_dir }}}"
BIVY_ETC_DIR="${BIVY_ETC_DIR:-{{ etc_dir }}}"
export BIVY_STATE_DIR BIVY_LIB_DIR BIVY_ETC_DIR

# The current time in epoch seconds; BIVY_NOW fakes the clock in tests.
bivy_now() {
    if [ -n "${BIVY_NOW:-}" ]; then
        printf '%s\n' "$BIVY_NOW"
    else
        date +%s
    fi
}

# Merge KEY=VALUE pairs into status.json atomically (see the status writer for the value syntax).
bivy_status() {
    python3 "$BIVY_LIB_DIR/status" "$@"
}

# User values arrive in a root-only file of shell-quoted assignments (quoted by the renderer),
# so no value is ever part of this code.
bivy_load_env() {
    # shellcheck source=/dev/null
    . "$BIVY_ETC_DIR/workspace.env"
    if [ -r "$BIVY_STATE_DIR/container.env" ]; then
        # shellcheck source=/dev/null
        . "$BIVY_STATE_DIR/container.env"
    fi
}
