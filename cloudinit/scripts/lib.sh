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

# apt-get that waits for the locks (cloud-init, apt-daily and unattended-upgrades take them at
# first boot) instead of failing at once: our own jobs take turns (flock); installing waits for
# dpkg's lock (DPkg::Lock::Timeout); `update`, whose lists lock that option does not cover (apt
# 2.6, measured: it fails at once), is tried again for up to 10 minutes.
bivy_apt() {
    _bivy_apt_try=1
    while ! flock "$BIVY_STATE_DIR/.apt.lock" env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 "$@"; do
        case " $* " in
            *" update "*) [ "$_bivy_apt_try" -lt 60 ] || return 1 ;;
            *) return 1 ;;
        esac
        _bivy_apt_try=$((_bivy_apt_try + 1))
        sleep "${BIVY_APT_RETRY_SECONDS:-10}"
    done
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

# The phases in which the bootstrap is still at work.
BIVY_BOOTSTRAP_PHASES=" booting installing restoring cloning building starting "

# Marks a bootstrap that can no longer finish as failed (reason $1) if status.json still shows
# one of its phases; prints the phase it found.
bivy_bootstrap_interrupted() {
    local phase
    phase=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("phase") or "")' \
        "$BIVY_STATE_DIR/status.json" 2>/dev/null || true)
    case "$BIVY_BOOTSTRAP_PHASES" in
        *" $phase "*)
            bivy_status phase=failed "detail=$1" "error=$1" "log_tail=<$BIVY_STATE_DIR/log/bootstrap.log"
            echo failed
            ;;
        *) echo "$phase" ;;
    esac
}
