#!/bin/bash
# Loads the metadata guard (metadata-guard.nft) and checks it is in place. Runs as
# bivy-metadata-guard.service before Docker starts (every boot) and before the bootstrap.
set -euo pipefail
rules="${BIVY_LIB_DIR:-{{ lib_dir }}}/metadata-guard.nft"
if ! command -v nft >/dev/null; then
    # Ubuntu's cloud images have nftables; a slimmer image gets it on the first boot.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nftables ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nftables; }
fi
nft -f "$rules"
nft list chain inet bivy_metadata forward >/dev/null
nft list chain inet bivy_metadata output >/dev/null
echo "metadata service: only root on this host may connect"
