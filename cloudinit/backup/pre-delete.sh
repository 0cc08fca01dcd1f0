#!/usr/bin/env bash
# Idle-monitor hook: the final backup; a non-zero exit keeps the VM until its hard lifetime.
exec "$(dirname "$(readlink -f "$0")")/backup" pre-delete "$@"
