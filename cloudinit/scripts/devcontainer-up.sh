#!/bin/bash
# Bivy: builds and starts the workspace's devcontainer with the pinned devcontainer CLI, makes the
# workspace the container user's, installs Claude Code in it, then runs the repository's
# lifecycle commands — in that order, so nothing of the repository runs before the checks.
#
#   devcontainer-up          the first start (called by the bootstrap; reports phases)
#   devcontainer-up --start  start it again after a reboot or a stop (bivy-ttyd.service): through
#                            the CLI, so postStartCommand runs as it would with `devcontainer up`
#
# BIVY_MODE=prebuild: no credentials go into the container and the lifecycle commands stop after
# updateContentCommand (the CLI's --prebuild); the rest runs on the VMs booted from the image.
# Booted from a prebuild (prebuild.json; a builder rebuilding one too, whose --prebuild run
# reruns updateContentCommand): the devcontainer built then is started again (the CLI
# finds it by its labels: same workspace folder, same config file) with the agent installed in
# it, unless the config hash or the agent changed: then it is replaced (the image stays as build
# cache) and status.json says prebuild_stale.
#
# For tests only: BIVY_*_DIR (lib.sh), BIVY_DEVCONTAINER (the CLI's path), BIVY_SYSTEMCTL.
set -Eeuo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env

LOG_DIR="$BIVY_STATE_DIR/log"
LOG="$LOG_DIR/devcontainer.log"
mkdir -p "$LOG_DIR"
DEVCONTAINER="${BIVY_DEVCONTAINER:-devcontainer}"
CLAUDE_DIR="$BIVY_STATE_DIR/{{ agent_name }}"
HOOK_DIR="$BIVY_LIB_DIR/hook"

fail() {
    local reason="$1"
    echo "devcontainer-up failed: $reason" >>"$LOG"
    [ -z "${install_pid:-}" ] || kill "$install_pid" 2>/dev/null || true
    bivy_status phase=failed "detail=$reason" "error=$reason" "log_tail=<$LOG"
    exit 1
}
trap 'fail "unexpected error in devcontainer-up on line $LINENO"' ERR

# The repository's own devcontainer.json, else Bivy's default (image + postCreateCommand).
config_args=()
config_file=""
for candidate in "$BIVY_REPO_DIR/.devcontainer/devcontainer.json" "$BIVY_REPO_DIR/.devcontainer.json"; do
    if [ -f "$candidate" ]; then
        config_file="$candidate"
        break
    fi
done
if [ -z "$config_file" ]; then
    config_file="$BIVY_LIB_DIR/devcontainer.json"
    config_args=(--override-config "$config_file")
fi

# Seconds since $1 (a $SECONDS value), for status.json's steps.
took() { echo $((SECONDS - $1)); }

# Every container of this devcontainer (a Compose project has several) that shares the host's
# network namespace; Docker's own view, so nothing the static check missed gets through.
host_network_containers() {
    local project ids=("$BIVY_CONTAINER_ID") id
    project=$(docker inspect -f '{{ "{{" }} index .Config.Labels "com.docker.compose.project" {{ "}}" }}' "$BIVY_CONTAINER_ID")
    if [ -n "$project" ] && [ "$project" != "<no value>" ]; then
        mapfile -t ids < <(docker ps -aq --filter "label=com.docker.compose.project=$project")
    fi
    for id in "${ids[@]}"; do
        if [ "$(docker inspect -f '{{ "{{" }} .HostConfig.NetworkMode {{ "}}" }}' "$id")" = host ]; then
            echo "$id"
        fi
    done
}

# Shell assignments of the agent's credentials (agent.env is docker's KEY=VALUE format, one line
# each, no quoting): single-quoted for sh inside the container.
agent_env_for_sh() {
    local line key value
    while IFS= read -r line || [ -n "$line" ]; do
        [ -n "$line" ] || continue
        key="${line%%=*}"
        value="${line#*=}"
        printf "export %s='%s'\n" "$key" "${value//\'/\'\\\'\'}"
    done <"$BIVY_ETC_DIR/agent.env"
}

# The hook scripts are the host's: the container runs them but must not change them. The CLI's
# --mount has no readonly option, so the files are root's and not writable by others, and
# immutable (chattr +i): a container's root cannot clear that flag (Docker does not grant
# CAP_LINUX_IMMUTABLE) nor write through it.
protect_hooks() {
    chattr -R -i "$HOOK_DIR" 2>/dev/null || true # a second run (after a failed one)
    chown -R root:root "$HOOK_DIR"
    chmod -R go-w "$HOOK_DIR"
    chattr -R +i "$HOOK_DIR" 2>>"$LOG" ||
        echo "this filesystem has no immutable flag; the hooks are protected by ownership only" >>"$LOG"
}

start_again() {
    local running
    exec >>"$LOG_DIR/devcontainer-start.log" 2>&1
    trap - ERR
    running=$(docker inspect -f '{{ "{{" }} .State.Running {{ "}}" }}' "$BIVY_CONTAINER_ID") || exit 1
    [ "$running" = true ] && exit 0
    echo "$(date -u +%FT%TZ) starting the devcontainer again"
    docker start "$BIVY_CONTAINER_ID" >/dev/null
    # The CLI runs postStartCommand (and anything not yet run) as `devcontainer up` would; not
    # `up` itself, which would also run initializeCommand on this host as root, from a
    # devcontainer.json the agent may have edited since.
    config_args=()
    if [ -n "${BIVY_DEVCONTAINER_OVERRIDE:-}" ]; then
        config_args=(--override-config "$BIVY_DEVCONTAINER_OVERRIDE")
    fi
    "$DEVCONTAINER" run-user-commands --container-id "$BIVY_CONTAINER_ID" \
        --workspace-folder "$BIVY_REPO_DIR" "${config_args[@]}" ||
        echo "the devcontainer's start commands failed (the terminal opens anyway)"
    exit 0
}

if [ "${1:-}" = --start ]; then
    start_again
fi

: >"$LOG"
# The prebuild's container has the agent and the onCreate work in it, no secret (a prebuild has
# none; this VM's credentials are written into it below) and mounts of the same host paths: it
# is reused when built from the same config for the same agent.
up_args=(--workspace-folder "$BIVY_REPO_DIR" "${config_args[@]}")
stale=()
reuse=""
if [ -s "$BIVY_STATE_DIR/prebuild.json" ]; then
    # (Also the prebuild's container.env, for starting that container again without the CLI.)
    read -r built_hash built_agent < <(python3 - "$BIVY_STATE_DIR/prebuild.json" "$BIVY_STATE_DIR/prebuilt-container.env" <<'PY'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    out.writelines(f"{k}={shlex.quote(str(v))}\n" for k, v in (d.get("container_env") or {}).items())
print(d.get("config_hash") or "-", d.get("agent") or "-")
PY
    ) || built_hash=""
    config_hash=$(python3 "$BIVY_LIB_DIR/devcontainer-hash" "$BIVY_REPO_DIR" "$BIVY_LIB_DIR/devcontainer.json")
    if [ "$config_hash" = "$built_hash" ] && [ "$built_agent" = "{{ agent_name }}" ]; then
        echo "prebuilt devcontainer (config $config_hash): started again" >>"$LOG"
        stale=(prebuild_stale=false)
        reuse=yes
    else
        echo "the devcontainer config changed since the prebuild ($built_hash -> $config_hash, agent $built_agent): rebuilt" >>"$LOG"
        up_args+=(--remove-existing-container)
        stale=(prebuild_stale=true)
    fi
fi
bivy_status phase=building "detail=building the devcontainer" progress=0.5 "${stale[@]}"
if reasons=$(python3 "$BIVY_LIB_DIR/devcontainer-check" "$config_file" 2>>"$LOG"); then
    :
else
    fail "refused: the devcontainer would share this VM's network (the metadata service serves its secrets): ${reasons//$'\n'/; }"
fi
protect_hooks
mkdir -p "$CLAUDE_DIR" "$BIVY_STATE_DIR/agent"

# The prebuild's container, started as after a reboot (start_again): `docker start`, not the
# CLI's `up`, whose start alone takes long under emulation. Compose projects (several
# containers) and a container that is gone go through `up`.
reuse_container() {
    local project
    [ -s "$BIVY_STATE_DIR/prebuilt-container.env" ] || return 1
    # shellcheck source=/dev/null
    . "$BIVY_STATE_DIR/prebuilt-container.env"
    project=$(docker inspect -f '{{ "{{" }} index .Config.Labels "com.docker.compose.project" {{ "}}" }}' "$BIVY_CONTAINER_ID") || return 1
    { [ -z "$project" ] || [ "$project" = "<no value>" ]; } || return 1
    docker start "$BIVY_CONTAINER_ID" >>"$LOG" 2>&1 || return 1
    mv "$BIVY_STATE_DIR/prebuilt-container.env" "$BIVY_STATE_DIR/container.env"
}

started=$SECONDS
if [ -n "$reuse" ] && reuse_container; then
    echo "started the prebuild's devcontainer $BIVY_CONTAINER_ID again" >>"$LOG"
else
    # --skip-post-create: the lifecycle commands run below, once the container is checked and
    # the workspace belongs to its user.
    if ! "$DEVCONTAINER" up "${up_args[@]}" --skip-post-create \
        --mount "type=bind,source=$CLAUDE_DIR,target={{ agent_config_dir }}" \
        --mount "type=bind,source=$BIVY_STATE_DIR/agent,target={{ container_state_dir }}" \
        --mount "type=bind,source=$HOOK_DIR,target={{ container_hook_dir }}" \
        >"$BIVY_STATE_DIR/devcontainer-up.json" 2>>"$LOG"; then
        cat "$BIVY_STATE_DIR/devcontainer-up.json" >>"$LOG"
        fail "building the devcontainer failed"
    fi
    python3 "$BIVY_LIB_DIR/container-env" "$BIVY_STATE_DIR/devcontainer-up.json" "${config_args[@]}" \
        >"$BIVY_STATE_DIR/container.env" 2>>"$LOG" || fail "the devcontainer did not start"
fi
rm -f "$BIVY_STATE_DIR/prebuilt-container.env"
bivy_load_env
devcontainer_took=$(took "$started")

mapfile -t shared < <(host_network_containers)
if [ "${#shared[@]}" -gt 0 ]; then
    docker rm -f "${shared[@]}" "$BIVY_CONTAINER_ID" >>"$LOG" 2>&1 || true
    rm -f "$BIVY_STATE_DIR/container.env"
    fail "refused: the devcontainer runs with host networking, so its root could read this VM's secrets from the metadata service; remove network_mode/--network host"
fi

bivy_status phase=starting "detail=installing the agent in the devcontainer" progress=0.7 \
    steps.devcontainer="$devcontainer_took"
# The agent installs (npm: the longest step) while the workspace and the agent's config are
# made ready beside it. Copied in and run from a file, so nothing it runs (apt, npm) can read
# the script's own stdin.
started=$SECONDS
# shellcheck disable=SC2016  # expanded inside the container
docker exec -i -u root "$BIVY_CONTAINER_ID" sh -c \
    'f=$(mktemp) && cat >"$f" && sh "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc' \
    <"$BIVY_LIB_DIR/agent-install" >"$LOG_DIR/agent-install.log" 2>&1 &
install_pid=$!
# The workspace belongs to the container's user, whatever its uid (root included: git refuses a
# repository owned by someone else, "dubious ownership").
read -r uid gid < <(docker exec -u "$BIVY_REMOTE_USER" "$BIVY_CONTAINER_ID" sh -c 'echo "$(id -u) $(id -g)"')
[[ "$uid" =~ ^[0-9]+$ && "$gid" =~ ^[0-9]+$ ]] || fail "could not find the devcontainer user's uid"
chown -R "$uid:$gid" "$BIVY_REPO_DIR" "$CLAUDE_DIR"
chmod 0700 "$CLAUDE_DIR" # credentials, and .claude.json names the API key's tail
chmod 0777 "$BIVY_STATE_DIR/agent"
# The workspace trust question would stop an agent started for nobody to see.
{% if agent_name == "claude" %}python3 "$BIVY_LIB_DIR/claude-config" "$CLAUDE_DIR" "$BIVY_LIB_DIR/claude-hooks.json" \
    "$BIVY_ETC_DIR/agent.env" "$BIVY_REMOTE_WORKSPACE" >>"$LOG" 2>&1
{% else %}python3 "$BIVY_LIB_DIR/agent-config" "$BIVY_LIB_DIR/agents/{{ agent_name }}/configs.json" \
    "$CLAUDE_DIR" "{{ agent_config_dir }}" "$BIVY_CONTAINER_ID" >>"$LOG" 2>&1 ||
    fail "could not put {{ agent_display }}'s hooks in place"
{% endif %}chown -R "$uid:$gid" "$CLAUDE_DIR"

# Shells opened any way (the web terminal, devcontainer exec, an IDE) find the persistent config
# dir; the terminal also reads the agent's credentials, readable by the container user only.
docker exec -u root "$BIVY_CONTAINER_ID" sh -c \
    'echo "export {{ agent_profile_exports }}" >/etc/profile.d/bivy.sh' >>"$LOG" 2>&1
{% if not prebuild %}agent_env_for_sh | docker exec -i -u root "$BIVY_CONTAINER_ID" sh -c \
    'umask 077 && cat >{{ container_agent_env }} && chown "$1:$2" {{ container_agent_env }}' sh "$uid" "$gid" \
    >>"$LOG" 2>&1 || fail "could not hand the agent's credentials to the devcontainer"
# The web terminal's service starts now, beside the agent's install (enabled without a reload:
# cloud-init's runcmd loaded the unit); the bootstrap waits for it to answer.
{ "${BIVY_SYSTEMCTL:-systemctl}" enable --no-reload bivy-ttyd.service && "${BIVY_SYSTEMCTL:-systemctl}" start --no-block bivy-ttyd.service; } >>"$LOG" 2>&1 ||
    echo "could not start the terminal's service early" >>"$LOG"
{% endif %}
wait "$install_pid" ||
    { cat "$LOG_DIR/agent-install.log" >>"$LOG"; fail "installing {{ agent_display }} in the devcontainer failed"; }
{% if agent_env_login and not prebuild %}docker exec -u "$BIVY_REMOTE_USER" "$BIVY_CONTAINER_ID" sh -c {{ agent_env_login }} >>"$LOG" 2>&1 ||
    echo "logging {{ agent_display }} in with its credential failed; log in from its terminal" >>"$LOG"
{% endif %}bivy_status phase=starting "detail=running the devcontainer's setup commands" progress=0.8 \
    steps.agent_install="$(took "$started")"
started=$SECONDS
"$DEVCONTAINER" run-user-commands --container-id "$BIVY_CONTAINER_ID" \
    --workspace-folder "$BIVY_REPO_DIR" "${config_args[@]}"{% if prebuild %} --prebuild{% endif %} >>"$LOG" 2>&1 ||
    fail "the devcontainer's setup commands (onCreateCommand, postCreateCommand...) failed"
bivy_status steps.user_commands="$(took "$started")"
trap - ERR
