#!/bin/sh
# Claude Code hook: records the agent's state for the idle monitor and the app. Runs inside the
# devcontainer; never blocks or fails the agent (always exits 0, prints nothing).
# Usage (from settings.json): agent-hook EVENT < hook-payload.json
here=$(dirname "$0")
if command -v node >/dev/null 2>&1; then
    node "$here/agent-hook.js" "${1:-}" 2>/dev/null
    exit 0
fi
# Without node (agent-install brings it with npm when the image has none) only the event decides.
state_dir="${BIVY_AGENT_STATE_DIR:-{{ container_state_dir }}}"
case "${1:-}" in
    UserPromptSubmit | PreToolUse | PostToolUse | SubagentStart | SubagentStop) state=working ;;
    PermissionRequest) state=waiting ;;
    Stop | StopFailure | SessionStart | SessionEnd) state=idle ;;
    *) exit 0 ;;
esac
cat >/dev/null
tmp="$state_dir/.agent.$$"
printf '{"state": "%s", "event": "%s", "message": "", "background_tasks": 0, "updated_at": "%s"}\n' \
    "$state" "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp" 2>/dev/null &&
    chmod 0644 "$tmp" && mv -f "$tmp" "$state_dir/agent.json"
exit 0
