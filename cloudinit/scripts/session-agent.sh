#!/bin/sh
# Bivy: one session's terminal, inside the devcontainer as its user (the tmux session of a Bivy
# session runs this; ttyd-session and `session new` start it). Reads the session's settings from
# the read-only hook dir (written by root on the VM: its worktree, its agent's state dir, its
# agent's credentials file and config variables, its start command), loads the credentials,
# starts the agent with the first prompt when asked to (--agent), then leaves a login shell in
# the worktree. POSIX sh: the image may have no bash.
#   session-agent NAME [--agent]
name="${1:-}"
settings="{{ container_hook_dir }}/sessions/$name.sh"
case "$name" in
    "" | *[!a-z0-9-]*) echo "Bivy: not a session name: $name" >&2; exit 2 ;;
esac
if [ ! -r "$settings" ]; then
    echo "Bivy: there is no session called $name in this workspace" >&2
    exit 2
fi
BIVY_SESSION_BINARY=""
# shellcheck source=/dev/null
. "$settings"
if [ -n "${BIVY_SESSION_AGENT_ENV:-}" ] && [ -r "$BIVY_SESSION_AGENT_ENV" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$BIVY_SESSION_AGENT_ENV"
    set +a
fi
cd "${BIVY_SESSION_DIR:-.}" 2>/dev/null || echo "Bivy: the worktree ${BIVY_SESSION_DIR:-} is missing" >&2
if [ "${2:-}" = --agent ] && [ -n "$BIVY_SESSION_BINARY" ]; then
    if command -v "$BIVY_SESSION_BINARY" >/dev/null 2>&1; then
        prompt=""
        if [ -s "$BIVY_AGENT_STATE_DIR/prompt" ]; then
            prompt=$(cat "$BIVY_AGENT_STATE_DIR/prompt")
            rm -f "$BIVY_AGENT_STATE_DIR/prompt"
        fi
        bivy_session_start "$prompt"
        echo "Bivy: $BIVY_SESSION_BINARY ended; this is a shell in the session's worktree."
    else
        echo "Bivy: $BIVY_SESSION_BINARY is not installed in this devcontainer." >&2
    fi
fi
if command -v bash >/dev/null 2>&1; then
    exec bash -l
fi
exec sh -l
