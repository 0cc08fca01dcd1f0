#!/bin/sh
# Runs as root inside the devcontainer (devcontainer-up copies it in with `docker exec -i -u root`):
# tmux for the agent's session (best effort: the launcher falls back to the host's), then Claude
# Code from npm, with node and npm from the image's package manager when it has none. npm, not the
# devcontainer feature: the feature comes from ghcr.io, which some networks cannot reach, and npm
# works wherever the npm registry does (the package installs the native binary through its
# per-platform optional dependency and a postinstall link).
set -eu
package="{{ agent_package }}"

pkg_install() {
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt="apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3"
        # The image's package lists are usually empty or stale.
        $apt install -y -q --no-install-recommends "$@" ||
            { $apt update -q && $apt install -y -q --no-install-recommends "$@"; }
    elif command -v apk >/dev/null 2>&1; then
        apk add --no-cache "$@"
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y "$@"
    elif command -v microdnf >/dev/null 2>&1; then
        microdnf install -y "$@"
    elif command -v yum >/dev/null 2>&1; then
        yum install -y "$@"
    elif command -v zypper >/dev/null 2>&1; then
        zypper --non-interactive install "$@"
    else
        echo "no package manager in this image to install $*"
        return 1
    fi
}

if ! command -v tmux >/dev/null 2>&1; then
    pkg_install tmux || echo "tmux is not available in the container; the host's is used"
fi

if command -v {{ agent_binary }} >/dev/null 2>&1; then
    echo "{{ agent_display }} is already installed: $({{ agent_binary }} --version)"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    pkg_install nodejs npm ca-certificates
fi
{% if agent_node_min %}node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt {{ agent_node_min }} ]; then
    echo "{{ agent_display }} needs node {{ agent_node_min }} or later; this devcontainer has node $(node -v 2>/dev/null || echo none): use an image with a newer node"
    exit 1
fi
{% endif %}npm install -g --no-fund --no-audit --loglevel=warn "$package"
# The global prefix's bin dir may not be on a login PATH (e.g. a custom npm prefix).
if ! command -v {{ agent_binary }} >/dev/null 2>&1; then
    ln -sf "$(npm prefix -g)/bin/{{ agent_binary }}" /usr/local/bin/{{ agent_binary }}
fi
{{ agent_binary }} --version
