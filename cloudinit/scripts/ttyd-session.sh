#!/bin/bash
# One web-terminal client: attach to the agent's tmux session inside the devcontainer through
# `devcontainer exec` (so remoteUser, remoteEnv and the user's login environment apply as in any
# devcontainer shell), with the agent's credentials from the container's root-written env file.
set -euo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env
exec_args=(exec --container-id "$BIVY_CONTAINER_ID" --workspace-folder "$BIVY_REPO_DIR")
# The config chosen at the first start (Bivy's default when the repository had none).
if [ -n "${BIVY_DEVCONTAINER_OVERRIDE:-}" ]; then
    exec_args+=(--override-config "$BIVY_DEVCONTAINER_OVERRIDE")
fi
# shellcheck disable=SC2016  # expanded inside the container
with_agent_env='set -a; [ -r {{ container_agent_env }} ] && . {{ container_agent_env }}; set +a; exec "$@"'
if docker exec "$BIVY_CONTAINER_ID" sh -c 'command -v tmux' >/dev/null 2>&1; then
    exec "${BIVY_DEVCONTAINER:-devcontainer}" "${exec_args[@]}" sh -c "$with_agent_env" sh tmux new -A -s agent
fi
exec tmux new -A -s agent "${BIVY_DEVCONTAINER:-devcontainer}" "${exec_args[@]}" \
    sh -c "$with_agent_env" sh bash -l
