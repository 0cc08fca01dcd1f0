#!/bin/bash
# Loads the guard (metadata-guard.nft: metadata service for root only, no container port
# published to the outside) and checks it is in place. Runs as
# bivy-metadata-guard.service before Docker starts (every boot) and before the bootstrap.
set -euo pipefail
rules="${BIVY_LIB_DIR:-{{ lib_dir }}}/metadata-guard.nft"
if ! command -v nft >/dev/null; then
    # Ubuntu's cloud images have nftables; a slimmer image gets it on the first boot.
    # Waits for the dpkg lock: cloud-init or unattended-upgrades may hold it at first boot; the
    # lists lock `update` takes is not covered by that option, so update is tried again.
    apt=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3)
    export DEBIAN_FRONTEND=noninteractive
    if ! "${apt[@]}" install -y -q --no-install-recommends nftables; then
        for try in $(seq 1 30); do
            "${apt[@]}" update -q && break
            [ "$try" -lt 30 ] || exit 1
            sleep 10
        done
        "${apt[@]}" install -y -q --no-install-recommends nftables
    fi
fi
nft -f "$rules"
nft list chain inet bivy_guard forward >/dev/null
nft list chain inet bivy_guard output >/dev/null
echo "metadata service: only root on this host may connect; no published container port is reachable from outside"
