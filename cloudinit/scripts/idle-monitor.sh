#!/bin/bash
# Bivy idle monitor (bivy-idle.timer, every 60 s): decides whether anyone or the agent still uses
# this VM and deletes it after idle_minutes without use, or at the hard lifetime regardless.
#
# Activity, any of: bootstrap still running; keep-alive lease in the future; the agent of any
# session (issue 15: main and every session in sessions/) working (a hook event inside the
# window) or with background tasks; an established connection to ttyd
# (web terminal / IDE websocket); an interactive SSH session (an sshd session process holding a
# pty, "sshd: dev@pts/0"; not utmp, where the host-tmux fallback registers too; the app's status
# reads are exec channels without a pty and never count); a workspace file changed since the last
# check (pruned: .git, node_modules, build and cache dirs). Process existence is not a signal.
# The agent's "working" and its background tasks count only within the idle window of its last
# hook event (a crashed agent never reports the end). A bootstrap a reboot interrupted is marked
# failed, and a failed VM is idle like any other.
#
#   idle-monitor            one check, then act (delete when due)
#   idle-monitor --decide   one check, print the decision, change nothing but the check stamps
#   idle-monitor --lifetime the hard lifetime is reached: delete regardless (the lifetime timer)
#
# For tests only: BIVY_NOW (fake clock), BIVY_*_DIR, BIVY_SS_CMD / BIVY_PS_CMD (commands that
# print established connections / process command lines), BIVY_BOOT_ID (this boot's id),
# BIVY_POWEROFF_CMD, BIVY_DELETE_ATTEMPTS,
# BIVY_DELETE_RETRY_SECONDS, and BIVY_METADATA_URL / BIVY_API_URL for the self-delete script.
set -uo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env

TTYD_PORT="${BIVY_TTYD_PORT:-{{ ttyd_port }}}"
WARNING_SECONDS="${BIVY_EXPIRY_WARNING_SECONDS:-{{ expiry_warning_seconds }}}"
PREDELETE_RETRY_SECONDS=600
PRUNE_NAMES=({% for name in prune_names %}{{ name }} {% endfor %})
mode="${1:-check}"
if [ "$mode" != --decide ]; then
    # The idle and the lifetime timers may fire together: one acts at a time, and after an
    # accepted deletion neither asks again while the VM goes away.
    exec 9>"$BIVY_STATE_DIR/monitor.lock"
    flock 9
    if [ -e "$BIVY_STATE_DIR/deleted" ]; then
        exit 0
    fi
fi
now=$(bivy_now)
window=$((BIVY_IDLE_MINUTES * 60))

log() { printf '%s bivy-idle: %s\n' "$(date -u +%FT%TZ)" "$*"; }

# One python3 start per check reads status.json and every session's agent.json (main's is
# agent/agent.json, another session's agent/NAME/agent.json): "PHASE REASON", REASON being why
# an agent keeps the VM ("agent working", "agent has N background task(s)", "... in session
# NAME" for a session other than main) or "-".
read_state() {
    python3 - "$BIVY_STATE_DIR" "$now" "$window" <<'PY' 2>/dev/null || echo "unknown -"
import json, os, re, stat, sys
from datetime import datetime

# agent.json is written from inside the container, so the agent's code may replace it with a
# FIFO, a device, a link or a huge file: open without blocking or following a link, read only a
# regular file, and only so much.
def load(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return {}
            data = json.loads(handle.read(65536))
        return data if isinstance(data, dict) else {}
    except Exception:
        return {}

def word(value, default):
    text = str(value or "").split()
    return text[0] if text else default

def reason(agent, now, window):
    try:
        updated = int(datetime.fromisoformat(str(agent.get("updated_at")).replace("Z", "+00:00")).timestamp())
    except Exception:
        updated = 0
    if now - updated >= window:
        return ""
    background = agent.get("background_tasks", 0)
    if isinstance(background, int) and background > 0:
        return f"agent has {background} background task(s)"
    return "agent working" if agent.get("state") == "working" else ""

state_dir, now, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
agents = [("main", os.path.join(state_dir, "agent", "agent.json"))]
try:
    names = sorted(f[:-5] for f in os.listdir(os.path.join(state_dir, "sessions")) if f.endswith(".json"))
except OSError:
    names = []
for name in names:
    if name != "main" and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,29}", name):
        agents.append((name, os.path.join(state_dir, "agent", name, "agent.json")))
found = "-"
for name, path in agents:
    why = reason(load(path), now, window)
    if why:
        found = why if name == "main" else f"{why} in session {name}"
        break
print(word(load(os.path.join(state_dir, "status.json")).get("phase"), "unknown"), found)
PY
}

ttyd_connections() {
    if [ -n "${BIVY_SS_CMD:-}" ]; then
        bash -c "$BIVY_SS_CMD"
    else
        ss -Htn state established "( sport = :$TTYD_PORT )"
    fi | grep -c . || true
}

# sshd's per-session process is titled "sshd: USER@pts/N" ("sshd-session: ..." from OpenSSH
# 9.8) while a pty is open; tmux and other local terminals also write utmp entries, so not `who`.
pty_sessions() {
    if [ -n "${BIVY_PS_CMD:-}" ]; then
        bash -c "$BIVY_PS_CMD"
    else
        ps -eo args=
    fi | grep -cE '^sshd(-session)?: [^ ]+@pts/' || true
}

# Whether any workspace file changed since the previous check. A new stamp is taken before the
# walk, so a file written during the walk is seen by the next check. -quit stops at the first hit.
files_changed() {
    local stamp="$BIVY_STATE_DIR/files.stamp" next="$BIVY_STATE_DIR/files.stamp.next" prune=() hit=""
    [ -d "$BIVY_REPO_DIR" ] || return 1
    touch -d "@$now" "$next"
    if [ -e "$stamp" ]; then
        for name in "${PRUNE_NAMES[@]}"; do
            prune+=(-name "$name" -o)
        done
        hit=$(find "$BIVY_REPO_DIR" -xdev \( "${prune[@]}" -false \) -prune -o -newer "$stamp" -print -quit 2>/dev/null)
    fi
    mv -f "$next" "$stamp"
    [ -n "$hit" ]
}

# Prints "active REASON", "idle SECONDS_LEFT" or "delete idle", and keeps idle-since.
decide() {
    local reason since
    if reason=$(activity); then
        rm -f "$BIVY_STATE_DIR/idle-since"
        echo "active $reason"
        return
    fi
    since=$(cat "$BIVY_STATE_DIR/idle-since" 2>/dev/null || true)
    if ! [[ "$since" =~ ^[0-9]+$ ]]; then
        since=$now
        echo "$since" >"$BIVY_STATE_DIR/idle-since"
    fi
    if [ $((now - since)) -ge "$window" ]; then
        echo "delete idle"
    else
        echo "idle $((since + window - now))"
    fi
}

# Prints the first reason this VM is in use and succeeds, or fails when nothing uses it.
activity() {
    local lease connections sessions
    case "$phase" in
        booting | installing | restoring | cloning | building | starting)
            echo "bootstrapping ($phase)"
            return 0
            ;;
    esac
    lease=$(cat "$BIVY_STATE_DIR/lease" 2>/dev/null || true)
    if [[ "$lease" =~ ^[0-9]+$ ]] && [ "$lease" -gt "$now" ]; then
        echo "keep-alive lease"
        return 0
    fi
    if [ "$agents" != - ]; then
        echo "$agents"
        return 0
    fi
    connections=$(ttyd_connections)
    if [ "$connections" -gt 0 ]; then
        echo "$connections web terminal connection(s)"
        return 0
    fi
    sessions=$(pty_sessions)
    if [ "$sessions" -gt 0 ]; then
        echo "$sessions interactive SSH session(s)"
        return 0
    fi
    if files_changed; then
        echo "workspace files changed"
        return 0
    fi
    return 1
}

# The provider's self-delete script, retried; when it keeps failing, power off and say why.
delete_self() {
    local why="$1" attempts="${BIVY_DELETE_ATTEMPTS:-5}" delay="${BIVY_DELETE_RETRY_SECONDS:-15}" i out
    bivy_status phase=deleting "detail=deleting this VM ($why)"
    for i in $(seq 1 "$attempts"); do
        if out=$(BIVY_ENV_FILE="$BIVY_ETC_DIR/provider.env" "$BIVY_LIB_DIR/self-delete" 2>&1); then
            log "deleted ($why): $out"
            touch "$BIVY_STATE_DIR/deleted"
            bivy_status phase=deleting "detail=the provider is deleting this VM ($why)"
            return 0
        fi
        log "self-delete attempt $i failed: $out"
        [ "$i" -lt "$attempts" ] && sleep $((delay * i))
    done
    bivy_status phase=failed "error=self-delete failed: $out; powered off instead" \
        "detail=could not delete this VM; powered off"
    log "self-delete failed; powering off"
    ${BIVY_POWEROFF_CMD:-systemctl poweroff}
    return 1
}

# The backup hook (issue 6); non-zero means "do not delete yet".
pre_delete() {
    local out
    [ -x "$BIVY_LIB_DIR/pre-delete" ] || return 0
    if out=$("$BIVY_LIB_DIR/pre-delete" 2>&1); then
        bivy_status backup_error=
        return 0
    fi
    bivy_status "backup_error=the final backup failed: $(printf '%s' "$out" | tail -n 3)"
    echo "$now" >"$BIVY_STATE_DIR/pre-delete-failed"
    return 1
}

deadline=$(cat "$BIVY_STATE_DIR/deadline" 2>/dev/null || true)
if ! [[ "$deadline" =~ ^[0-9]+$ ]]; then
    boot=$(awk '/^btime/ {print $2}' /proc/stat)
    deadline=$((boot + BIVY_MAX_HOURS * 3600))
    echo "$deadline" >"$BIVY_STATE_DIR/deadline"
fi

if [ "$mode" = --lifetime ] || [ "$now" -ge "$deadline" ]; then
    if [ "$mode" = --decide ]; then
        echo "delete lifetime"
        exit 0
    fi
    log "the hard lifetime is reached"
    pre_delete || log "the final backup failed; deleting anyway at the hard lifetime"
    delete_self "maximum lifetime reached"
    exit $?
fi

read -r phase agents <<<"$(read_state)"
# A reboot during the bootstrap leaves its phase behind with nothing running to finish it (a
# stopped bootstrap is marked by its unit's ExecStopPost; a hard reset runs none).
if [[ " installing restoring cloning building starting " == *" $phase "* ]]; then
    started_boot=$(cat "$BIVY_STATE_DIR/bootstrap.boot" 2>/dev/null || true)
    this_boot="${BIVY_BOOT_ID:-$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)}"
    if [ -n "$started_boot" ] && [ "$started_boot" != "$this_boot" ] && [ "$mode" != --decide ]; then
        log "the bootstrap was interrupted by a restart in phase $phase"
        phase=$(bivy_bootstrap_interrupted "the VM restarted while the bootstrap was running ($phase)")
    elif [ -n "$started_boot" ] && [ "$started_boot" != "$this_boot" ]; then
        phase=failed
    fi
fi
decision=$(decide)
if [ "$mode" = --decide ]; then
    echo "$decision"
    exit 0
fi

expiring=()
if [ $((deadline - now)) -le "$WARNING_SECONDS" ] && { [ "$phase" = ready ] || [ "$phase" = expiring ]; }; then
    expiring=(phase=expiring "detail=the maximum lifetime ends at $(date -u -d "@$deadline" +%H:%MZ); this VM will then be deleted")
fi

case "$decision" in
    active*)
        bivy_status idle_since= idle_deadline= "lifetime_deadline=@$deadline" "${expiring[@]}"
        ;;
    idle*)
        since=$(cat "$BIVY_STATE_DIR/idle-since")
        bivy_status "idle_since=@$since" "idle_deadline=@$((since + window))" "lifetime_deadline=@$deadline" "${expiring[@]}"
        ;;
    "delete idle")
        failed=$(cat "$BIVY_STATE_DIR/pre-delete-failed" 2>/dev/null || echo 0)
        if [ $((now - failed)) -lt "$PREDELETE_RETRY_SECONDS" ]; then
            log "the last final backup failed; retrying later"
            exit 0
        fi
        log "idle for $BIVY_IDLE_MINUTES minutes"
        bivy_status "detail=idle for $BIVY_IDLE_MINUTES minutes: the final backup, then this VM is deleted"
        if ! pre_delete; then
            log "the final backup failed; not deleting"
            bivy_status "detail=idle, but the final backup failed: this VM is kept and tries again in $((PREDELETE_RETRY_SECONDS / 60)) minutes"
            exit 0
        fi
        # The backup may take minutes: a person who came back meanwhile (terminal, SSH, a file
        # saved, a keep-alive from the app) or an agent that started working keeps the VM. The
        # same checks again, on a fresh clock and state; activity restarts the idle clock.
        now=$(bivy_now)
        read -r phase agents <<<"$(read_state)"
        decision=$(decide)
        if [[ "$decision" == active* ]]; then
            log "${decision#active } during the final backup; not deleting"
            bivy_status idle_since= idle_deadline= \
                "detail=in use again (${decision#active }); the idle clock restarted"
            exit 0
        fi
        delete_self "idle for $BIVY_IDLE_MINUTES minutes"
        exit $?
        ;;
esac
log "$decision"
