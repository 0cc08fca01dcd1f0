#!/bin/bash
# One web-terminal client: attach to a session's tmux session inside the devcontainer through
# `devcontainer exec` (so remoteUser, remoteEnv and the user's login environment apply as in any
# devcontainer shell), with the agent's credentials from the container's root-written env file.
# ttyd runs with -a: `?arg=NAME` in the URL picks the session (issue 15); none is main, the
# repository folder in tmux session `agent` as before. Another session's tmux session is
# bivy-NAME, in its worktree, started by `session new`; if it is gone it starts again with a
# shell there (session-agent).
set -euo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env
session="${1:-main}"
if ! [[ "$session" =~ ^[a-z0-9][a-z0-9-]{0,29}$ ]] ||
    { [ "$session" != main ] && [ ! -r "$BIVY_LIB_DIR/hook/sessions/$session.sh" ]; }; then
    echo "Bivy: there is no session called ${session:0:40} in this workspace."
    sleep 2
    exit 1
fi
exec_args=(exec --container-id "$BIVY_CONTAINER_ID" --workspace-folder "$BIVY_REPO_DIR")
# The config chosen at the first start (Bivy's default when the repository had none).
if [ -n "${BIVY_DEVCONTAINER_OVERRIDE:-}" ]; then
    exec_args+=(--override-config "$BIVY_DEVCONTAINER_OVERRIDE")
fi
# shellcheck disable=SC2016  # expanded inside the container
with_agent_env='set -a; [ -r {{ container_agent_env }} ] && . {{ container_agent_env }}; set +a; exec "$@"'
if [ "$session" = main ]; then
    if docker exec "$BIVY_CONTAINER_ID" sh -c 'command -v tmux' >/dev/null 2>&1; then
        exec "${BIVY_DEVCONTAINER:-devcontainer}" "${exec_args[@]}" sh -c "$with_agent_env" sh tmux new -A -s agent
    fi
    exec tmux new -A -s agent "${BIVY_DEVCONTAINER:-devcontainer}" "${exec_args[@]}" \
        sh -c "$with_agent_env" sh bash -l
fi
launcher="sh {{ container_hook_dir }}/session-agent $session"
if docker exec "$BIVY_CONTAINER_ID" sh -c 'command -v tmux' >/dev/null 2>&1; then
    # With the agent's credentials like main: if this starts the tmux server, main gets them.
    exec "${BIVY_DEVCONTAINER:-devcontainer}" "${exec_args[@]}" sh -c "$with_agent_env" sh \
        tmux new -A -s "bivy-$session" "$launcher"
fi
exec tmux new -A -s "bivy-$session" "${BIVY_DEVCONTAINER:-devcontainer}" "${exec_args[@]}" \
    sh "{{ container_hook_dir }}/session-agent" "$session"
