#!/usr/bin/env bash
# Bootstrap hook: restore the workspace's latest backup before the agent starts (see backup).
exec "$(dirname "$(readlink -f "$0")")/backup" restore "$@"
