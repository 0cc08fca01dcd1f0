#!/bin/bash
# Bivy bootstrap: installs the tools, clones the repository, builds the devcontainer with Claude
# Code and starts the web terminal, reporting each phase in status.json. Runs once per VM.
# The install jobs are called through run_job, which shellcheck cannot follow.
# shellcheck disable=SC2317
set -Eeuo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
bivy_load_env

LOG_DIR="$BIVY_STATE_DIR/log"
LOG="$LOG_DIR/bootstrap.log"
mkdir -p "$LOG_DIR"
chmod 0700 "$LOG_DIR"
exec >>"$LOG" 2>&1
export DEBIAN_FRONTEND=noninteractive
NODE_MAJOR="{{ node_major }}"
DEVCONTAINER_CLI="{{ devcontainer_cli }}"
CLAUDE_FEATURE="{{ claude_feature }}"

fail() {
    local reason="$1" log="${2:-$LOG}"
    echo "bootstrap failed: $reason"
    bivy_status phase=failed "detail=$reason" "error=$reason" "log_tail=<$log"
    exit 1
}
trap 'fail "unexpected error on line $LINENO"' ERR

# Nothing but root on this host may reach the metadata service (it serves the user data's
# secrets) before Docker or the agent runs; the unit is also ordered before docker.service.
systemctl start bivy-metadata-guard.service ||
    fail "could not close the metadata service to containers and users"

# The hard lifetime counts from the boot, written once so a reboot cannot extend it.
if [ ! -s "$BIVY_STATE_DIR/deadline" ]; then
    boot=$(awk '/^btime/ {print $2}' /proc/stat)
    echo $((boot + BIVY_MAX_HOURS * 3600)) >"$BIVY_STATE_DIR/deadline"
fi
bivy_status phase=installing "detail=installing docker, git, tmux, ttyd, node" progress=0.05 \
    "lifetime_deadline=@$(cat "$BIVY_STATE_DIR/deadline")" error= log_tail=

# Ubuntu's ttyd package starts its own service on port 7681; ours replaces it.
systemctl mask ttyd.service >/dev/null 2>&1 || true

# ttyd comes from Ubuntu (noble universe, 1.7.4): the provider's local mirror, signed packages,
# both architectures, and every flag we use (-W -O -c -i); a GitHub release download would add
# a third-party dependency (rate limits, outages) and a checksum we would have to pin per version.
# shellcheck disable=SC2329  # run in the background through run_job
install_packages() {
    local packages=() tool
    for tool in tmux ttyd git jq; do
        command -v "$tool" >/dev/null || packages+=("$tool")
    done
    # The docker-ce app image already has the engine (and buildx); otherwise Ubuntu's, from the
    # provider's local mirror, is the fastest reliable source.
    if ! command -v docker >/dev/null; then
        packages+=(docker.io docker-buildx)
    fi
    if [ "${#packages[@]}" -gt 0 ]; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${packages[@]}"
    fi
    systemctl enable --now docker
}

# shellcheck disable=SC2329  # run in the background through run_job
install_node() {
    # @devcontainers/cli needs Node >= 20 and Ubuntu 24.04 ships 18, so take the official
    # build from nodejs.org, checked against its SHASUMS256.txt.
    local arch dir sums file
    if command -v devcontainer >/dev/null; then
        echo "the devcontainer CLI is already installed"
        return 0
    fi
    case "$(uname -m)" in
        x86_64) arch=x64 ;;
        aarch64) arch=arm64 ;;
        *) echo "unsupported architecture $(uname -m)"; return 1 ;;
    esac
    dir="https://nodejs.org/dist/latest-v${NODE_MAJOR}.x"
    sums=$(curl -fsSL --retry 5 --retry-all-errors "$dir/SHASUMS256.txt")
    file=$(printf '%s\n' "$sums" | awk -v a="linux-$arch.tar.xz" '$2 ~ a"$" {print $2; exit}')
    [ -n "$file" ] || { echo "no Node build for linux-$arch"; return 1; }
    curl -fsSL --retry 5 --retry-all-errors -o "/tmp/$file" "$dir/$file"
    (cd /tmp && printf '%s\n' "$sums" | grep "  $file\$" | sha256sum -c -)
    mkdir -p /opt/node
    tar -xJf "/tmp/$file" -C /opt/node --strip-components=1
    rm -f "/tmp/$file"
    ln -sf /opt/node/bin/node /opt/node/bin/npm /opt/node/bin/npx /usr/local/bin/
    /opt/node/bin/npm install -g --no-fund --no-audit "$DEVCONTAINER_CLI"
    ln -sf /opt/node/bin/devcontainer /usr/local/bin/devcontainer
}

# shellcheck disable=SC2329  # run in the background through run_job
clone_repo() {
    local args=(clone --quiet)
    if [ -n "${BIVY_BRANCH:-}" ]; then
        args+=(--branch "$BIVY_BRANCH")
    fi
    mkdir -p "$(dirname "$BIVY_REPO_DIR")"
    if [ -s "$BIVY_ETC_DIR/git-token" ]; then
        # The token is read by the askpass helper from a root-only file: never in the URL,
        # never in .git/config, never on a command line.
        export GIT_ASKPASS="$BIVY_LIB_DIR/git-askpass" BIVY_GIT_TOKEN_FILE="$BIVY_ETC_DIR/git-token"
    fi
    GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new" \
        git -c credential.helper= "${args[@]}" -- "$BIVY_REPO_URL" "$BIVY_REPO_DIR"
    chown -R dev:dev "$BIVY_REPO_DIR"
}

forget_token() {
    if [ -e "$BIVY_ETC_DIR/git-token" ]; then
        shred -u "$BIVY_ETC_DIR/git-token" 2>/dev/null || rm -f "$BIVY_ETC_DIR/git-token"
    fi
}

# Each job runs in the background with its own log, so a failure shows its own tail; errexit
# applies inside it (it would not in a function called from "||"), the ERR trap does not.
run_job() {
    local name="$1"
    shift
    trap - ERR
    "$@" >"$LOG_DIR/$name.log" 2>&1
}

install_packages_log="$LOG_DIR/packages.log"
node_log="$LOG_DIR/node.log"
clone_log="$LOG_DIR/clone.log"
run_job packages install_packages &
packages_pid=$!
run_job node install_node &
node_pid=$!
clone_pid=""
if command -v git >/dev/null; then
    run_job clone clone_repo &
    clone_pid=$!
fi

wait "$packages_pid" || { forget_token; fail "installing packages failed" "$install_packages_log"; }
bivy_status phase=cloning "detail=cloning the repository" progress=0.3
if [ -z "$clone_pid" ]; then
    run_job clone clone_repo &
    clone_pid=$!
fi
wait "$clone_pid" || { forget_token; fail "cloning the repository failed" "$clone_log"; }
forget_token
wait "$node_pid" || fail "installing node and the devcontainer CLI failed" "$node_log"

if [ -x "$BIVY_LIB_DIR/restore" ]; then
    bivy_status phase=restoring "detail=restoring the agent's history" progress=0.4
    "$BIVY_LIB_DIR/restore" >"$LOG_DIR/restore.log" 2>&1 ||
        fail "restoring the backup failed" "$LOG_DIR/restore.log"
fi

# The agent's persistent config dir (history, .claude.json, settings with our hooks).
CLAUDE_DIR="$BIVY_STATE_DIR/claude"
mkdir -p "$CLAUDE_DIR" "$BIVY_STATE_DIR/agent"
chmod 0700 "$CLAUDE_DIR" # credentials, and .claude.json names the API key's tail
chmod 0777 "$BIVY_STATE_DIR/agent"
ln -sfn agent/agent.json "$BIVY_STATE_DIR/agent.json"
python3 "$BIVY_LIB_DIR/claude-config" "$CLAUDE_DIR" "$BIVY_LIB_DIR/claude-hooks.json" "$BIVY_ETC_DIR/agent.env"

bivy_status phase=building "detail=building the devcontainer" progress=0.5
up_args=(up --workspace-folder "$BIVY_REPO_DIR"
    --additional-features "{\"$CLAUDE_FEATURE\":{}}"
    --mount "type=bind,source=$CLAUDE_DIR,target={{ container_claude_dir }}"
    --mount "type=bind,source=$BIVY_STATE_DIR/agent,target={{ container_state_dir }}"
    --mount "type=bind,source=$BIVY_LIB_DIR/hook,target={{ container_hook_dir }},readonly")
if [ ! -f "$BIVY_REPO_DIR/.devcontainer/devcontainer.json" ] && [ ! -f "$BIVY_REPO_DIR/.devcontainer.json" ]; then
    up_args+=(--override-config "$BIVY_LIB_DIR/devcontainer.json")
fi
devcontainer "${up_args[@]}" >"$BIVY_STATE_DIR/devcontainer-up.json" 2>"$LOG_DIR/devcontainer.log" ||
    fail "building the devcontainer failed" "$LOG_DIR/devcontainer.log"
python3 "$BIVY_LIB_DIR/container-env" "$BIVY_STATE_DIR/devcontainer-up.json" >"$BIVY_STATE_DIR/container.env" ||
    fail "the devcontainer did not start" "$LOG_DIR/devcontainer.log"
bivy_load_env

bivy_status phase=starting "detail=starting the agent's terminal" progress=0.9
uid=$(docker exec -u "$BIVY_REMOTE_USER" "$BIVY_CONTAINER_ID" id -u)
chown -R "$uid" "$CLAUDE_DIR"
chmod 0700 "$CLAUDE_DIR"
# Shells opened any other way (VS Code, devcontainer exec) find the same persistent config dir.
docker exec -u root "$BIVY_CONTAINER_ID" sh -c \
    'echo "export CLAUDE_CONFIG_DIR={{ container_claude_dir }}" >/etc/profile.d/bivy.sh'
# tmux inside the container keeps the agent's session when the browser closes; most images
# have a package manager, and the launcher falls back to tmux on the host if this fails.
docker exec -u root "$BIVY_CONTAINER_ID" sh -c 'command -v tmux >/dev/null ||
    (apt-get update -q && apt-get install -y -q tmux) || apk add --no-cache tmux || dnf install -y tmux' \
    >"$LOG_DIR/tmux.log" 2>&1 || echo "tmux is not available in the container; using the host's"
# The keep-alive lease: the app (as dev, over SSH) writes an epoch second into it.
[ -e "$BIVY_STATE_DIR/lease" ] || echo 0 >"$BIVY_STATE_DIR/lease"
chown dev:dev "$BIVY_STATE_DIR/lease"
chmod 0644 "$BIVY_STATE_DIR/lease"
systemctl enable --now bivy-ttyd.service
for _ in $(seq 1 30); do
    if curl -fsS -o /dev/null --max-time 2 -K - <<<"user = \"bivy:$BIVY_TTYD_PASSWORD\"" http://127.0.0.1:{{ ttyd_port }}/; then
        bivy_status phase=ready "detail=ready" progress=1
        trap - ERR
        exit 0
    fi
    sleep 1
done
fail "the web terminal did not start" "$LOG_DIR/devcontainer.log"
