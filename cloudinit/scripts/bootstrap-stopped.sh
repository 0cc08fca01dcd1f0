#!/bin/bash
# ExecStopPost of bivy-bootstrap.service: when the bootstrap ended without reporting an end
# (killed by its timeout, the OOM killer, a shutdown), say so in status.json instead of leaving a
# bootstrapping phase there forever (which the idle monitor would take for "busy"). A hard
# reset runs no ExecStopPost: the idle monitor notices that from the boot id.
set -uo pipefail
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"
how="${SERVICE_RESULT:-unknown}"
if [ -n "${EXIT_STATUS:-}" ]; then
    how="$how, ${EXIT_CODE:-exited} $EXIT_STATUS"
fi
bivy_bootstrap_interrupted "the bootstrap was stopped before it finished ($how)"
