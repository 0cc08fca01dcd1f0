# shellcheck shell=bash disable=SC2154  # work, env_file, uid_gid: from `session new`
# Bivy: sets {{ agent_display }} up for sessions of a workspace made with another agent (issue 15).
# Not in the user data: the app sends this file rendered for the agent
# (app.cloudinit.render_session_agent) with the session's input, and `session new` sources it as
# root on the VM (its functions and variables: work, env_file, uid_gid, the container's).
# The agent's config dir persists on this host under the state mount (the container's mounts
# were fixed when it was made) and {{ agent_config_dir }} in the container links there; its
# credentials go to a root-only file here and to a file only the container's user reads there;
# then its install, its hook files and its login, as devcontainer-up does for the first agent.
echo "setting up {{ agent_name }} for the sessions" >>"$LOG"
host_dir="$BIVY_STATE_DIR/agent/.agents/{{ agent_name }}"
mkdir -p "$host_dir"
chown "$uid_gid" "$BIVY_STATE_DIR/agent/.agents" "$host_dir"
chmod 0700 "$BIVY_STATE_DIR/agent/.agents" "$host_dir"
# shellcheck disable=SC2016  # expanded inside the container
docker exec -u root "$BIVY_CONTAINER_ID" sh -c \
    'if [ -e "$2" ] && [ ! -L "$2" ]; then exit 0; fi; mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2"' \
    sh "{{ container_state_dir }}/.agents/{{ agent_name }}" "{{ agent_config_dir }}" >>"$LOG" 2>&1 ||
    die "could not link {{ agent_name }}'s config dir in the devcontainer"
mkdir -p "$BIVY_ETC_DIR/agents"
chmod 0700 "$BIVY_ETC_DIR/agents"
install -m 0600 "$work/credentials.env" "$BIVY_ETC_DIR/agents/{{ agent_name }}.env"
# shellcheck disable=SC2016  # expanded inside the container
data env-sh "$BIVY_ETC_DIR/agents/{{ agent_name }}.env" | docker exec -i -u root "$BIVY_CONTAINER_ID" sh -c \
    'umask 077 && cat >"$1" && chown "$2" "$1"' sh "$env_file" "$uid_gid" >>"$LOG" 2>&1 ||
    die "could not hand {{ agent_name }}'s credentials to the devcontainer"
# Copied in and run from a file, so nothing it runs (apt, npm) can read the script's stdin.
# shellcheck disable=SC2016  # expanded inside the container
docker exec -i -u root "$BIVY_CONTAINER_ID" sh -c \
    'f=$(mktemp) && cat >"$f" && sh "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc' \
    <"$BIVY_LIB_DIR/agents/{{ agent_name }}/agent-install" >>"$LOG" 2>&1 ||
    die "installing {{ agent_display }} in the devcontainer failed (see $LOG)"
{% if agent_name == "claude" %}python3 "$BIVY_LIB_DIR/claude-config" "$host_dir" "$BIVY_LIB_DIR/claude-hooks.json" \
    "$BIVY_ETC_DIR/agents/{{ agent_name }}.env" "$BIVY_REMOTE_WORKSPACE" >>"$LOG" 2>&1 ||
    die "could not put Claude Code's hooks in place"
{% else %}protect_hooks
python3 "$BIVY_LIB_DIR/agent-config" "$BIVY_LIB_DIR/agents/{{ agent_name }}/configs.json" "$host_dir" \
    "{{ agent_config_dir }}" "$BIVY_CONTAINER_ID" >>"$LOG" 2>&1 ||
    die "could not put {{ agent_display }}'s hooks in place"
{% endif %}chown -R "$uid_gid" "$host_dir"
{% if agent_env_login %}# shellcheck disable=SC2016  # expanded inside the container
cexec sh -c 'set -a; . "$1"; set +a; export {{ agent_profile_exports }}; eval "$2"' sh "$env_file" {{ agent_env_login }} >>"$LOG" 2>&1 ||
    echo "logging {{ agent_display }} in with its credential failed; log in from its terminal" >>"$LOG"
{% endif %}
