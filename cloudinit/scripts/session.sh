#!/bin/bash
# Bivy sessions (issue 15): several agents side by side in one workspace, each on its own git
# worktree and branch, in its own tmux session (its own terminal: ttyd `?arg=NAME`), with its
# own agent state. Runs as root (the app: `sudo -n` as dev over SSH; the bootstrap makes `main`).
#
#   session new NAME --agent A [--branch B] [--base REF]
#       stdin (optional): the app's JSON {"prompt": TEXT, "agent": {...}} (notes/CONTRACTS2.md)
#   session ls [--json]                 (any user may list: only world-readable files are read)
#   session rm NAME [--force]           refuses uncommitted or unpushed work without --force
#   session diff|push NAME ...          the review commands: session-review
#
# `main` is the repository folder itself on its checked-out branch, with the workspace's agent
# and today's paths (agent.json in the state dir's agent/, tmux session `agent`). Any other
# session NAME gets the worktree .bivy/worktrees/NAME inside the repository folder (excluded in
# .git/info/exclude) on a new branch bivy/NAME from BASE (default: main's HEAD), made inside
# the container as its user; its agent writes /var/lib/bivy/agent/NAME/agent.json
# (container: /bivy/state/NAME); its tmux session is bivy-NAME and starts the agent at once
# (with the first prompt when one was given).
# For tests only: BIVY_*_DIR (lib.sh), BIVY_DEVCONTAINER (the devcontainer CLI).
set -Eeuo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"

SESSIONS_DIR="$BIVY_STATE_DIR/sessions"
AGENTS_DIR="$BIVY_STATE_DIR/agents"
HOOK_DIR="$BIVY_LIB_DIR/hook"
CONTAINER_STATE="{{ container_state_dir }}"
CONTAINER_HOOK="{{ container_hook_dir }}"
WORKSPACE_AGENT="{{ agent_name }}"
WORKSPACE_AGENT_ENV="{{ container_agent_env }}"
WORKSPACE_AGENT_EXPORTS="{{ agent_profile_exports }}"
DEVCONTAINER="${BIVY_DEVCONTAINER:-devcontainer}"
NAME_RE='^[a-z0-9][a-z0-9-]{0,29}$'
LOG="$BIVY_STATE_DIR/log/session.log"

die() {
    echo "session: $*" >&2
    exit 1
}

data() { python3 "$BIVY_LIB_DIR/session-data" "$@"; }

usage() {
    echo "usage: session new NAME --agent A [--branch B] [--base REF] | ls [--json] | rm NAME [--force] | diff NAME | push NAME" >&2
    exit 64
}

valid_name() { [[ "$1" =~ $NAME_RE ]]; }

# The devcontainer's id, user and folder (container.env, written by devcontainer-up).
need_container() {
    bivy_load_env
    [ -n "${BIVY_CONTAINER_ID:-}" ] || die "the workspace's devcontainer is not up yet"
    read -r C_UID C_GID < <(docker exec -u "$BIVY_REMOTE_USER" "$BIVY_CONTAINER_ID" sh -c 'echo "$(id -u) $(id -g)"') ||
        die "the devcontainer is not running"
    [[ "$C_UID" =~ ^[0-9]+$ && "$C_GID" =~ ^[0-9]+$ ]] || die "could not find the devcontainer user's uid"
}

# A command inside the container as its user, in the repository folder.
cexec() { docker exec -u "$BIVY_REMOTE_USER" -w "$BIVY_REMOTE_WORKSPACE" "$BIVY_CONTAINER_ID" "$@"; }
cgit() { cexec git "$@"; }

devcontainer_exec() {
    local args=(exec --container-id "$BIVY_CONTAINER_ID" --workspace-folder "$BIVY_REPO_DIR")
    if [ -n "${BIVY_DEVCONTAINER_OVERRIDE:-}" ]; then
        args+=(--override-config "$BIVY_DEVCONTAINER_OVERRIDE")
    fi
    "$DEVCONTAINER" "${args[@]}" "$@"
}

# The hook dir is mounted into the container and immutable (devcontainer-up): lifted by root
# for a write, then set again.
protect_hooks() {
    chown -R root:root "$HOOK_DIR"
    chmod -R go-w "$HOOK_DIR"
    chattr -R +i "$HOOK_DIR" 2>/dev/null || true
}

hook_write() {
    chattr -R -i "$HOOK_DIR" 2>/dev/null || true
    mkdir -p "$(dirname "$1")"
    cat >"$1.new"
    chmod 0644 "$1.new"
    mv -f "$1.new" "$1"
    protect_hooks
}

# Where a session's agent state lives on this host, and in the container.
state_dir() { if [ "$1" = main ]; then echo "$BIVY_STATE_DIR/agent"; else echo "$BIVY_STATE_DIR/agent/$1"; fi; }
container_state_dir() { if [ "$1" = main ]; then echo "$CONTAINER_STATE"; else echo "$CONTAINER_STATE/$1"; fi; }
tmux_name() { if [ "$1" = main ]; then echo agent; else echo "bivy-$1"; fi; }

# Makes agent $1 usable in this container: the workspace's own is there since the bootstrap;
# another one comes with the app's description ($2/agent.json: its files are in place already)
# or was installed by an earlier session. Prints the container's credentials file for it.
ensure_agent() {
    # shellcheck disable=SC2034  # host_dir and uid_gid are the sourced setup's
    local agent="$1" work="$2" host_dir env_file uid_gid="$C_UID:$C_GID"
    if [ "$agent" = "$WORKSPACE_AGENT" ]; then
        [ -s "$work/agent.json" ] && cp "$work/agent.json" "$AGENTS_DIR/$agent.json"
        echo "$WORKSPACE_AGENT_ENV"
        return 0
    fi
    env_file="/etc/bivy-agent-$agent.env"
    if [ ! -s "$work/agent.json" ]; then
        [ -s "$AGENTS_DIR/$agent.json" ] ||
            die "$agent is not set up in this workspace yet: create the session from the app (bivy session new)"
        echo "$env_file"
        return 0
    fi
    [ -r "$BIVY_LIB_DIR/agents/$agent/setup" ] || die "the app sent no setup for $agent"
    # Its setup comes with the app's description (session-setup.sh, rendered for the agent).
    # shellcheck source=/dev/null
    . "$BIVY_LIB_DIR/agents/$agent/setup" >&2
    cp "$work/agent.json" "$AGENTS_DIR/$agent.json"
    echo "$env_file"
}

# The worktree for session $1 on branch $2 from $3 (inside the container, as its user).
make_worktree() {
    local name="$1" branch="$2" base="$3" path=".bivy/worktrees/$1" exclude
    exclude=$(cgit rev-parse --git-path info/exclude)
    # shellcheck disable=SC2016  # expanded inside the container
    cexec sh -c 'mkdir -p "$(dirname "$1")" && touch "$1" && { grep -qx "/.bivy/" "$1" || echo "/.bivy/" >>"$1"; }' \
        sh "$exclude" || die "could not keep .bivy/ out of git"
    if cgit show-ref --verify --quiet "refs/heads/$branch"; then
        cgit worktree add --quiet "$path" "$branch" >>"$LOG" 2>&1 ||
            die "could not check out $branch in a worktree (is it checked out in another session?)"
    else
        cgit worktree add --quiet -b "$branch" "$path" "$base" >>"$LOG" 2>&1 ||
            die "could not create the worktree on branch $branch from $base"
    fi
}

# Starts the session's tmux session (detached) with its agent, where the web terminal finds it.
start_tmux() {
    local name="$1" tmux
    tmux=$(tmux_name "$name")
    if docker exec "$BIVY_CONTAINER_ID" sh -c 'command -v tmux' >/dev/null 2>&1; then
        # Through the workspace agent's credentials as ttyd-session does: when this starts the
        # tmux server, its environment is what main's terminal later gets too.
        # shellcheck disable=SC2016  # expanded inside the container
        devcontainer_exec sh -c 'set -a; [ -r "$1" ] && . "$1"; set +a; shift; exec "$@"' sh \
            "$WORKSPACE_AGENT_ENV" tmux new-session -d -s "$tmux" "sh $CONTAINER_HOOK/session-agent $name --agent" \
            >>"$LOG" 2>&1 9>&-
    else
        # As ttyd-session does without tmux in the image: the host's tmux runs the exec.
        local args=(exec --container-id "$BIVY_CONTAINER_ID" --workspace-folder "$BIVY_REPO_DIR")
        if [ -n "${BIVY_DEVCONTAINER_OVERRIDE:-}" ]; then
            args+=(--override-config "$BIVY_DEVCONTAINER_OVERRIDE")
        fi
        # (fd 9, the sessions' lock, must not live on in the tmux server)
        tmux new-session -d -s "$tmux" "$DEVCONTAINER" "${args[@]}" \
            sh "$CONTAINER_HOOK/session-agent" "$name" --agent >>"$LOG" 2>&1 9>&-
    fi
}

cmd_new() {
    local name="${1:-}" agent="$WORKSPACE_AGENT" branch="" base="" work env_file worktree state
    [ $# -gt 0 ] && shift
    valid_name "$name" || die "a session name is 1-30 of a-z, 0-9 and -, starting with a letter or digit"
    while [ $# -gt 0 ]; do
        case "$1" in
            --agent) agent="${2:-}"; shift 2 ;;
            --branch) branch="${2:-}"; shift 2 ;;
            --base) base="${2:-}"; shift 2 ;;
            *) usage ;;
        esac
    done
    [[ "$agent" =~ ^[a-z0-9-]{1,30}$ ]] || die "not an agent name: $agent"
    mkdir -p "$SESSIONS_DIR" "$AGENTS_DIR" "$(dirname "$LOG")"
    chmod 0755 "$SESSIONS_DIR" "$AGENTS_DIR"
    exec 9>"$SESSIONS_DIR/.lock"
    flock 9
    local resume=""
    if [ -e "$SESSIONS_DIR/$name.json" ]; then
        [ "$name" = main ] && exit 0 # the bootstrap made it already
        # A restored session is started again here, its worktree as it is (its agent set up
        # first when it is not the workspace's); any other is there already.
        [ "$(data get "$SESSIONS_DIR/$name.json" restored)" = true ] ||
            die "there is a session called $name already"
        [ "$(data get "$SESSIONS_DIR/$name.json" agent)" = "$agent" ] ||
            die "the restored session $name runs $(data get "$SESSIONS_DIR/$name.json" agent)"
        resume=1
    fi
    need_container
    work=$(mktemp -d)
    # shellcheck disable=SC2064  # the path is fixed now
    trap "rm -rf '$work'" EXIT
    if [ ! -t 0 ]; then
        chattr -R -i "$HOOK_DIR" 2>/dev/null || true
        data receive "$BIVY_LIB_DIR" "$work" "$agent" || { protect_hooks; die "the session's input was refused"; }
        protect_hooks
    fi
    if [ "$name" = main ]; then
        [ "$agent" = "$WORKSPACE_AGENT" ] || die "main runs the workspace's agent, $WORKSPACE_AGENT"
        [ -z "$branch$base" ] || die "main is the repository folder on its own branch"
        worktree="$BIVY_REMOTE_WORKSPACE"
        branch=$(cgit symbolic-ref -q --short HEAD || true)
    elif [ -n "$resume" ]; then
        branch=$(data get "$SESSIONS_DIR/$name.json" branch)
        base=$(data get "$SESSIONS_DIR/$name.json" base)
        worktree="$BIVY_REMOTE_WORKSPACE/.bivy/worktrees/$name"
    else
        [ -n "$branch" ] || branch="bivy/$name"
        cgit check-ref-format --branch "$branch" >/dev/null 2>&1 || die "not a branch name: $branch"
        [ -n "$base" ] || base=$(cgit rev-parse --verify -q HEAD) || die "the repository has no commit to start from"
        base=$(cgit rev-parse --verify -q "$base^{commit}") || die "no commit $base in the repository"
        worktree="$BIVY_REMOTE_WORKSPACE/.bivy/worktrees/$name"
    fi
    env_file=$(ensure_agent "$agent" "$work")
    if [ "$name" != main ] && [ -z "$resume" ]; then
        make_worktree "$name" "$branch" "$base"
    fi
    state=$(state_dir "$name")
    mkdir -p "$state"
    chmod 0777 "$BIVY_STATE_DIR/agent"
    if [ "$name" != main ]; then
        [ -z "$resume" ] || rm -f "$state/agent.json"
        chown "$C_UID:$C_GID" "$state"
        chmod 0755 "$state"
        if [ -s "$work/prompt" ]; then
            install -m 0600 -o "$C_UID" -g "$C_GID" "$work/prompt" "$state/prompt"
        fi
        if [ ! -e "$state/agent.json" ]; then
            printf '{"state": "idle", "event": "SessionCreated", "message": "", "background_tasks": 0, "updated_at": "%s"}\n' \
                "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$state/agent.json"
            chown "$C_UID:$C_GID" "$state/agent.json"
        fi
    fi
    write_launcher "$name" "$agent" "$worktree" "$env_file"
    data record "$SESSIONS_DIR/$name.json" "name=$name" "agent=$agent" "branch=$branch" \
        "base=$base" "worktree=$worktree" "created_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)" failed=false \
        restored=false
    if [ "$name" != main ]; then
        if ! start_tmux "$name"; then
            data record "$SESSIONS_DIR/$name.json" failed=true "message=the session's terminal did not start (see $LOG)"
            die "the session's terminal did not start (see $LOG)"
        fi
    fi
    [ "$name" != main ] || adopt_restored
    echo "session $name: $agent on ${branch:-(detached)} in $worktree"
}

# The settings session-agent reads in the container (hook dir: root's, read-only there).
write_launcher() {
    local name="$1" agent="$2" worktree="$3" env_file="$4"
    if [ ! -s "$AGENTS_DIR/$agent.json" ] && [ "$agent" = "$WORKSPACE_AGENT" ]; then
        printf '{"name": "%s", "command": ["%s"], "config_env": {}}\n' "$agent" "{{ agent_binary }}" \
            >"$AGENTS_DIR/$agent.json"
    fi
    local descriptor=-
    [ -s "$AGENTS_DIR/$agent.json" ] && descriptor="$AGENTS_DIR/$agent.json"
    {
        data launcher "$name" "$worktree" "$(container_state_dir "$name")" "$env_file" "$descriptor"
        if [ "$agent" = "$WORKSPACE_AGENT" ] && [ -n "$WORKSPACE_AGENT_EXPORTS" ]; then
            echo "export $WORKSPACE_AGENT_EXPORTS"
        fi
    } | hook_write "$HOOK_DIR/sessions/$name.sh"
}

# Sessions a restore brought back (backup.sh made their worktrees and records on this host):
# their worktrees' links repaired for the container's paths, their state dirs and settings; the
# web terminal starts each one's tmux session when it is opened.
adopt_restored() {
    local record name agent env_file state note
    for record in "$SESSIONS_DIR"/*.json; do
        [ -f "$record" ] || continue
        name=$(basename "$record" .json)
        { valid_name "$name" && [ "$name" != main ]; } || continue
        [ ! -e "$HOOK_DIR/sessions/$name.sh" ] || continue
        cgit worktree repair ".bivy/worktrees/$name" >>"$LOG" 2>&1 ||
            echo "session $name: git worktree repair failed" >>"$LOG"
        agent=$(data get "$record" agent)
        [[ "$agent" =~ ^[a-z0-9-]{1,30}$ ]] || agent="$WORKSPACE_AGENT"
        env_file="/etc/bivy-agent-$agent.env"
        [ "$agent" != "$WORKSPACE_AGENT" ] || env_file="$WORKSPACE_AGENT_ENV"
        state=$(state_dir "$name")
        mkdir -p "$state"
        chown "$C_UID:$C_GID" "$state"
        chmod 0755 "$state"
        write_launcher "$name" "$agent" "$BIVY_REMOTE_WORKSPACE/.bivy/worktrees/$name" "$env_file"
        data record "$record" "worktree=$BIVY_REMOTE_WORKSPACE/.bivy/worktrees/$name" restored=true
        note="restored from the backup; its terminal opens a shell in the worktree"
        [ -s "$AGENTS_DIR/$agent.json" ] ||
            note="restored from the backup; $agent is not installed in this VM: start a new session with it from the app"
        printf '{"state": "idle", "event": "SessionRestored", "message": "%s", "background_tasks": 0, "updated_at": "%s"}\n' \
            "$note" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$state/agent.json"
        chown "$C_UID:$C_GID" "$state/agent.json"
        echo "restored session $name ($agent)" >>"$LOG"
    done
}

cmd_ls() {
    local json=0
    [ "${1:-}" = --json ] && json=1
    if [ "$json" = 1 ]; then
        data ls "$BIVY_STATE_DIR"
        return
    fi
    data ls "$BIVY_STATE_DIR" | python3 -c '
import json, sys
rows = json.load(sys.stdin)
print("%-12s %-9s %-9s %-24s %s" % ("SESSION", "AGENT", "STATE", "BRANCH", "WORKTREE"))
for r in rows:
    state = "failed" if r["failed"] else r["state"]
    print("%-12s %-9s %-9s %-24s %s" % (r["name"], r["agent"], state, r["branch"], r["worktree"]))'
}

cmd_rm() {
    local name="${1:-}" force=0 branch path dirty unpushed main_head
    [ "${2:-}" = --force ] && force=1
    valid_name "$name" || die "not a session name: $name"
    [ "$name" != main ] || die "main is the workspace's own session and cannot be removed"
    [ -e "$SESSIONS_DIR/$name.json" ] || die "there is no session called $name"
    exec 9>"$SESSIONS_DIR/.lock"
    flock 9
    need_container
    branch=$(data get "$SESSIONS_DIR/$name.json" branch)
    path=".bivy/worktrees/$name"
    if cexec test -e "$path/.git"; then
        dirty=$(cgit -C "$path" status --porcelain --untracked-files=normal 2>/dev/null | head -n 5 || true)
        main_head=$(cgit rev-parse -q --verify HEAD || true)
        unpushed=$(cgit rev-list --count "refs/heads/$branch" --not --remotes ${main_head:+"$main_head"} 2>/dev/null || echo 0)
        if [ "$force" != 1 ] && [ -n "$dirty" ]; then
            die "session $name has uncommitted changes (commit or push them, or remove with --force)"
        fi
        if [ "$force" != 1 ] && [ "${unpushed:-0}" -gt 0 ]; then
            die "session $name has $unpushed commit(s) on $branch that are not pushed (push them, or remove with --force)"
        fi
    fi
    # Its terminal first (the agent may be writing), then the worktree, then its branch when it
    # is Bivy's own (bivy/NAME; a branch the user named stays).
    cexec tmux kill-session -t "$(tmux_name "$name")" >/dev/null 2>&1 || true
    tmux kill-session -t "$(tmux_name "$name")" >/dev/null 2>&1 || true
    if cexec test -e "$path"; then
        cgit worktree remove --force "$path" >>"$LOG" 2>&1 || cexec rm -rf "$path"
    fi
    cgit worktree prune >/dev/null 2>&1 || true
    if [ "$branch" = "bivy/$name" ]; then
        cgit branch -D -q "$branch" >/dev/null 2>&1 || true
    fi
    chattr -R -i "$HOOK_DIR" 2>/dev/null || true
    rm -f "$HOOK_DIR/sessions/$name.sh"
    protect_hooks
    rm -rf "$(state_dir "$name")"
    rm -f "$SESSIONS_DIR/$name.json"
    echo "session $name removed"
}

main() {
    local command="${1:-}"
    [ $# -gt 0 ] && shift
    case "$command" in
        new)
            cmd_new "$@"
            ;;
        ls)
            cmd_ls "$@"
            ;;
        rm)
            cmd_rm "$@"
            ;;
        diff | push)
            [ -x "$BIVY_LIB_DIR/session-review" ] || die "this VM has no session-review"
            exec "$BIVY_LIB_DIR/session-review" "$command" "$@"
            ;;
        *)
            usage
            ;;
    esac
}

main "$@"
