#!/bin/bash
# One web-terminal client: attach to the agent's tmux session inside the devcontainer, with the
# agent's credentials from the root-only env file (never stored in the image or the repository).
set -euo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env
exec_args=(exec -it --env-file "$BIVY_ETC_DIR/agent.env" -u "$BIVY_REMOTE_USER"
    -w "$BIVY_REMOTE_WORKSPACE" "$BIVY_CONTAINER_ID")
if docker exec "$BIVY_CONTAINER_ID" sh -c 'command -v tmux' >/dev/null 2>&1; then
    exec docker "${exec_args[@]}" tmux new -A -s agent
fi
exec tmux new -A -s agent docker "${exec_args[@]}" bash -l
