#!/usr/bin/env bash
# Bivy's restic backup of the agent's history and the workspace's unsaved work (DESIGN.md §3).
#
# Installed as /usr/local/lib/bivy/backup (rendered verbatim: no template syntax in here):
#   backup [run] [--force]   back up now (bivy-backup.timer, the app's "Back up now")
#   backup pre-delete        final backup before the VM deletes itself; non-zero = keep the VM
#   backup restore           restore the latest backup before the agent starts (bootstrap)
# /usr/local/lib/bivy/pre-delete and /restore (the hooks of the idle monitor and the bootstrap)
# call it. Settings: /etc/bivy/backup.env (restic, storage keys) and workspace.env (name, repo).
#
# Two restic snapshots per backup, each of a directory's contents (so a restore does not depend
# on absolute paths): tag bivy-agent = the agent's config dir (transcripts, .claude.json,
# credentials); tag bivy-workspace = a staging dir with the git work tree's uncommitted state
# (HEAD, branch, `git diff --binary HEAD`, untracked-not-ignored files, unpushed commits), and
# the same for every other agent session (issue 15) under sessions/NAME/ with its record (its
# worktree .bivy/worktrees/NAME; the commits of its branch that main's HEAD and the remotes
# lack); tag bivy-agents = the config dirs of the sessions' other agents (state dir's
# agent/.agents). A restore brings the sessions' worktrees back on their branches; `session new
# main` (bootstrap) then repairs their paths for the container and gives them their terminals.
# A backup runs only after restore has finished, so an empty new VM never becomes "latest".
set -euo pipefail
umask 077

ETC_DIR=${BIVY_ETC_DIR:-/etc/bivy}
VAR_DIR=${BIVY_STATE_DIR:-/var/lib/bivy}
LIB_DIR=${BIVY_LIB_DIR:-/usr/local/lib/bivy}
if [[ -r $ETC_DIR/workspace.env ]]; then
  # shellcheck source=/dev/null
  source "$ETC_DIR/workspace.env" # BIVY_NAME, BIVY_REPO_DIR (not exported)
fi
ENV_FILE=${BIVY_BACKUP_ENV:-$ETC_DIR/backup.env}
if [[ -r $ENV_FILE ]]; then
  set -a # restic reads RESTIC_* and AWS_* from its environment
  # shellcheck source=/dev/null
  source "$ENV_FILE"
  set +a
fi
STATE_DIR=${BIVY_BACKUP_STATE:-$VAR_DIR/backup}
RESTIC=${BIVY_RESTIC:-restic}
AGENT_DIR=${BIVY_AGENT_DIR:-$VAR_DIR/claude}
WORKSPACE_DIR=${BIVY_WORKSPACE_DIR:-${BIVY_REPO_DIR:-}}
UNCOMMITTED=${BIVY_BACKUP_INCLUDE_UNCOMMITTED:-1}
SNAPSHOT_HOST=${BIVY_BACKUP_HOST:-${BIVY_NAME:-bivy}}
RETRIES=${BIVY_BACKUP_RETRIES:-3}
RETRY_DELAY=${BIVY_BACKUP_RETRY_DELAY:-20}
TIMEOUT=${BIVY_BACKUP_TIMEOUT:-1800}
# Files of the agent dir that the new VM's bootstrap wrote and a restore must not replace.
KEEP=${BIVY_RESTORE_KEEP:-settings.json}
MAX_UNTRACKED_KB=${BIVY_BACKUP_MAX_UNTRACKED_KB:-512000}
export RESTIC_CACHE_DIR=${RESTIC_CACHE_DIR:-$STATE_DIR/cache}
LAST_ERROR=""
REPO=""
RESULT=""
SNAPSHOTS="[]"

log() { printf '%s bivy-backup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# Merge key=value pairs into status.json through the VM's status writer (lib/status), which
# holds the lock every other writer (bootstrap, idle monitor) takes, so no field is lost to a
# concurrent merge. An empty value writes null; our values never start with "@" or "<" (the
# writer's epoch and file-tail syntax).
status_set() {
  mkdir -p "$VAR_DIR"
  BIVY_STATE_DIR=$VAR_DIR python3 "$LIB_DIR/status" "$@"
}

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# The line of restic's stderr that says what went wrong, short enough for status.json.
summarize() {
  local text=$1 line
  line=$(grep -m1 -E '^(Fatal|error|Error)' <<<"$text" || true)
  if [[ -z $line ]]; then line=$(grep -v '^[[:space:]]*$' <<<"$text" | tail -n1 || true); fi
  printf '%s' "${line:0:300}"
}

# The snapshot list of this workspace as JSON (restic asks for the key once per call, and the
# key derivation is deliberately slow: list once, then read the list).
list_snapshots() { restic_ snapshots --json --host "$SNAPSHOT_HOST" 2>/dev/null; }

# From a snapshot list on stdin: the newest time (ISO-8601 UTC) of tag $1, or of all; "" if none.
newest() {
  python3 -c '
import json, sys
tag = sys.argv[1] if len(sys.argv) > 1 else ""
times = [s["time"] for s in json.load(sys.stdin) if not tag or tag in (s.get("tags") or [])]
print(max(times)[:19] + "Z" if times else "")' "$@"
}

latest_time() { list_snapshots | newest || true; }

restic_() { timeout --kill-after=30 "$TIMEOUT" "$RESTIC" "$@"; }

require_config() {
  local missing=()
  for var in RESTIC_REPOSITORY RESTIC_PASSWORD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    if [[ -z ${!var:-} ]]; then missing+=("$var"); fi
  done
  if [[ -n ${missing[*]} ]]; then
    LAST_ERROR="backup is not configured on this VM (missing ${missing[*]} in $ENV_FILE)"
    return 1
  fi
}

# restic from Ubuntu's archive (signed, served by the provider's mirror); the bootstrap has
# already refreshed the package lists when the restore runs.
ensure_restic() {
  command -v "$RESTIC" >/dev/null && return 0
  log "installing restic"
  # Waits for the dpkg lock: the bootstrap or unattended-upgrades may hold it.
  local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends restic \
    >/dev/null 2>&1; then
    "${apt[@]}" update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends restic \
      >/dev/null 2>&1 || {
      LAST_ERROR="could not install restic"
      return 1
    }
  fi
}

# Set REPO to "present" or "absent"; fail (LAST_ERROR set) when the repository cannot be read.
repo_state() {
  local err rc=0
  err=$(restic_ cat config 2>&1 >/dev/null) || rc=$?
  if ((rc == 0)); then
    REPO=present
  elif ((rc == 10)) || grep -q -e 'specified key does not exist' -e 'NoSuchKey' <<<"$err"; then
    REPO=absent # restic >= 0.17 exits 10; older ones only say so
  else
    LAST_ERROR=$(summarize "$err")
    [[ -n $LAST_ERROR ]] || LAST_ERROR="restic exited with status $rc"
    return 1
  fi
}

# Run a command as the owner of the work tree, so git never leaves root-owned files in it.
as_owner() {
  local uid gid
  uid=$(stat -c %u "$WORKSPACE_DIR")
  gid=$(stat -c %g "$WORKSPACE_DIR")
  if [[ $(id -u) == 0 && $uid != 0 ]]; then
    setpriv --reuid="$uid" --regid="$gid" --clear-groups -- \
      env HOME=/nonexistent GIT_OPTIONAL_LOCKS=0 "$@"
  else
    env GIT_OPTIONAL_LOCKS=0 "$@"
  fi
}

# git in the main folder, or (TREE_GIT/TREE_DIR set) in a session's worktree, whose links were
# written inside the container: its admin dir is named explicitly, so they need not resolve here.
g() {
  if [[ -n ${TREE_GIT:-} ]]; then
    as_owner git -c safe.directory='*' --git-dir="$TREE_GIT" --work-tree="${TREE_DIR:?}" -C "$TREE_DIR" "$@"
  else
    as_owner git -c safe.directory='*' -C "$WORKSPACE_DIR" "$@"
  fi
}

SESSION_RE='^[a-z0-9][a-z0-9-]{0,29}$'
AGENTS_HOME=${BIVY_AGENTS_HOME:-$VAR_DIR/agent/.agents}

has_worktree() { [[ $UNCOMMITTED == 1 && -n $WORKSPACE_DIR && -d $WORKSPACE_DIR/.git ]]; }

# Write the work tree's unsaved state into $1. Every step is checked: `set -e` does not apply
# inside a function whose caller tests it.
stage_workspace() {
  local stage=$1 head unpushed
  rm -rf "$stage"
  mkdir -p "$stage"
  g rev-parse --git-dir >/dev/null || return 1
  if head=$(g rev-parse -q --verify HEAD); then
    printf '%s\n' "$head" >"$stage/head"
    g symbolic-ref -q --short HEAD >"$stage/branch" || true
    g diff --binary HEAD >"$stage/changes.patch" || return 1
    g ls-files -z --others --exclude-standard >"$stage/untracked.list" || return 1
    # Commits no remote has (there may be none: git refuses an empty bundle); for a session,
    # also none main's HEAD has (BESIDES: main's HEAD, which the restore has by then).
    # shellcheck disable=SC2086  # BESIDES is empty or one commit id
    unpushed=$(g rev-list -n1 HEAD --not --remotes ${BESIDES:-}) || return 1
    if [[ -n $unpushed ]]; then
      # shellcheck disable=SC2086
      g bundle create - HEAD --not --remotes ${BESIDES:-} >"$stage/unpushed.bundle" 2>/dev/null ||
        return 1
    fi
  else
    # No commit yet: every non-ignored file is unsaved work.
    g ls-files -z --cached --others --exclude-standard >"$stage/untracked.list" || return 1
  fi
  if [[ -s $stage/untracked.list ]]; then
    (cd "${TREE_DIR:-$WORKSPACE_DIR}" && tar --null -T "$stage/untracked.list" -cf -) >"$stage/untracked.tar" ||
      return 1
    if (($(du -k "$stage/untracked.tar" | cut -f1) > MAX_UNTRACKED_KB)); then
      log "untracked files exceed ${MAX_UNTRACKED_KB} KiB: not backed up (commit or ignore them)"
      rm -f "$stage/untracked.tar"
      echo "untracked files exceeded ${MAX_UNTRACKED_KB} KiB" >"$stage/untracked-skipped"
    fi
  fi
  rm -f "$stage/untracked.list"
}

# Every session but main whose worktree is there: its record and unsaved state under
# $1/sessions/NAME (see the top).
stage_sessions() {
  local stage=$1 record name tree admin main_head
  main_head=$(g rev-parse -q --verify HEAD || true)
  for record in "$VAR_DIR"/sessions/*.json; do
    [[ -f $record ]] || continue
    name=$(basename "$record" .json)
    [[ $name =~ $SESSION_RE && $name != main ]] || continue
    tree="$WORKSPACE_DIR/.bivy/worktrees/$name"
    [[ -f $tree/.git ]] || continue
    admin=$(sed -n 's/^gitdir: //p' "$tree/.git")
    admin="$WORKSPACE_DIR/.git/worktrees/${admin##*/}"
    [[ -d $admin ]] || continue
    TREE_GIT=$admin TREE_DIR=$tree BESIDES=$main_head stage_workspace "$stage/sessions/$name" ||
      return 1
    cp "$record" "$stage/sessions/$name/record.json"
  done
}

# One restic backup of the contents of directory $1 with tag $2.
snapshot() {
  local dir=$1 tag=$2 err rc=0
  if [[ -z $(ls -A "$dir") ]]; then
    log "$tag: nothing to back up yet"
    return 0 # restic refuses an empty snapshot, and there is nothing to keep
  fi
  err=$(cd "$dir" && restic_ backup --quiet --host "$SNAPSHOT_HOST" --tag "$tag" . 2>&1) || rc=$?
  if ((rc == 3)); then
    log "some files of $tag could not be read; the snapshot was still saved: $(summarize "$err")"
  elif ((rc != 0)); then
    LAST_ERROR=$(summarize "$err")
    [[ -n $LAST_ERROR ]] || LAST_ERROR="restic backup exited with status $rc"
    return 1
  fi
}

do_backup() {
  local force=${1:-0} final=${2:-0} err when
  require_config || return 1
  mkdir -p "$STATE_DIR"
  if [[ ! -e $STATE_DIR/restore-done && ! -e $STATE_DIR/restore-failed ]]; then
    log "restore has not run yet: nothing of this VM to back up"
    return 0
  fi
  if [[ -e $STATE_DIR/restore-failed && $force != 1 ]]; then
    if [[ $final == 1 ]]; then
      # The bootstrap stops when the restore fails, so the agent never ran: nothing new to save.
      log "the restore at start failed and the agent never ran: nothing new to back up"
      return 0
    fi
    LAST_ERROR="the restore at start failed, so backing up now could hide the older backup;"
    LAST_ERROR+=" use Back up now to override"
    return 1
  fi
  ensure_restic || return 1
  repo_state || return 1
  if [[ $REPO == absent ]]; then
    if ! err=$(restic_ init 2>&1 >/dev/null); then
      LAST_ERROR=$(summarize "$err")
      return 1
    fi
    log "created the backup repository"
  fi
  if [[ -n $AGENT_DIR && -d $AGENT_DIR ]]; then
    snapshot "$AGENT_DIR" bivy-agent || return 1
  fi
  if [[ -d $AGENTS_HOME ]]; then
    snapshot "$AGENTS_HOME" bivy-agents || return 1
  fi
  if has_worktree; then
    BESIDES="" stage_workspace "$STATE_DIR/stage" || {
      LAST_ERROR="could not read the uncommitted changes of $WORKSPACE_DIR"
      return 1
    }
    stage_sessions "$STATE_DIR/stage" || {
      LAST_ERROR="could not read the uncommitted changes of a session's worktree"
      return 1
    }
    snapshot "$STATE_DIR/stage" bivy-workspace || return 1
  fi
  rm -f "$STATE_DIR/restore-failed"
  touch "$STATE_DIR/restore-done"
  when=$(latest_time)
  status_set last_backup_at="${when:-$(now)}" backup_error=
  log "backup done"
}

# Bring the staged state in $1 back into the fresh clone at $WORKSPACE_DIR.
apply_workspace() {
  local src=$1 head branch keep bundle
  if [[ ! -d $WORKSPACE_DIR/.git ]]; then
    log "no git work tree at $WORKSPACE_DIR: uncommitted changes not restored"
    return 0
  fi
  keep="$WORKSPACE_DIR/.git/bivy-restore"
  head=$(cat "$src/head" 2>/dev/null || true)
  branch=$(cat "$src/branch" 2>/dev/null || true)
  if [[ -s $src/unpushed.bundle ]]; then
    # git reads a bundle by path: hand the owner a copy it may read (the staging dir is root's).
    bundle=$(mktemp /tmp/bivy-unpushed.XXXXXX)
    cat "$src/unpushed.bundle" >"$bundle"
    chown "$(stat -c %u:%g "$WORKSPACE_DIR")" "$bundle"
    g fetch -q "$bundle" 2>/dev/null || log "could not read the unpushed commits"
    rm -f "$bundle"
  fi
  if [[ -n $head ]] && g cat-file -e "$head^{commit}" 2>/dev/null; then
    if [[ -n $branch ]]; then
      g checkout -q -B "$branch" "$head" || log "could not check out $branch at $head"
    else
      g checkout -q --detach "$head" || log "could not check out $head"
    fi
  elif [[ -n $head ]]; then
    log "commit $head is gone from the remote: applying the changes onto $(g rev-parse --short HEAD)"
  fi
  if [[ -s $src/changes.patch ]]; then
    if ! g apply --binary --whitespace=nowarn <"$src/changes.patch" 2>/dev/null &&
      ! g apply --binary --3way --whitespace=nowarn <"$src/changes.patch" 2>/dev/null; then
      as_owner mkdir -p "$keep"
      cp "$src/changes.patch" "$keep/changes.patch"
      log "the uncommitted changes did not apply cleanly; kept in $keep/changes.patch"
    fi
  fi
  if [[ -s $src/untracked.tar ]]; then
    as_owner tar -xf - -C "$WORKSPACE_DIR" <"$src/untracked.tar" ||
      log "some untracked files could not be restored"
  fi
  apply_sessions "$src"
}

# The sessions' worktrees, back on their branches with their unsaved work, and their records.
apply_sessions() {
  local src=$1 dir name branch head tree bundle
  for dir in "$src"/sessions/*/; do
    [[ -f $dir/record.json ]] || continue
    name=$(basename "$dir")
    [[ $name =~ $SESSION_RE && $name != main ]] || continue
    branch=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("branch", ""))' \
      "$dir/record.json" 2>/dev/null || true)
    head=$(cat "$dir/head" 2>/dev/null || true)
    if [[ -s $dir/unpushed.bundle ]]; then
      bundle=$(mktemp /tmp/bivy-unpushed.XXXXXX)
      cat "$dir/unpushed.bundle" >"$bundle"
      chown "$(stat -c %u:%g "$WORKSPACE_DIR")" "$bundle"
      g fetch -q "$bundle" 2>/dev/null || log "session $name: could not read its commits"
      rm -f "$bundle"
    fi
    if [[ -z $head ]] || ! g cat-file -e "$head^{commit}" 2>/dev/null; then
      log "session $name: its commit ${head:-?} is gone; not restored"
      continue
    fi
    tree="$WORKSPACE_DIR/.bivy/worktrees/$name"
    # shellcheck disable=SC2016  # expanded by that sh
    as_owner sh -c 'mkdir -p "$(dirname "$1")" && touch "$1" && { grep -qx /.bivy/ "$1" || echo /.bivy/ >>"$1"; }' \
      sh "$WORKSPACE_DIR/.git/info/exclude"
    if [[ -n $branch ]] && g check-ref-format --branch "$branch" >/dev/null 2>&1; then
      g branch -f "$branch" "$head" >/dev/null 2>&1 || log "session $name: could not set $branch"
      g worktree add -q "$tree" "$branch" || { log "session $name: no worktree"; continue; }
    else
      g worktree add -q --detach "$tree" "$head" || { log "session $name: no worktree"; continue; }
    fi
    if [[ -s $dir/changes.patch ]] &&
      ! as_owner git -C "$tree" apply --binary --whitespace=nowarn <"$dir/changes.patch" 2>/dev/null &&
      ! as_owner git -C "$tree" apply --binary --3way --whitespace=nowarn <"$dir/changes.patch" 2>/dev/null; then
      cp "$dir/changes.patch" "$WORKSPACE_DIR/.git/bivy-restore-$name.patch"
      log "session $name: its uncommitted changes did not apply; kept in .git/bivy-restore-$name.patch"
    fi
    if [[ -s $dir/untracked.tar ]]; then
      as_owner tar -xf - -C "$tree" <"$dir/untracked.tar" || log "session $name: untracked files not restored"
    fi
    mkdir -p "$VAR_DIR/sessions"
    chmod 0755 "$VAR_DIR/sessions"
    install -m 0644 "$dir/record.json" "$VAR_DIR/sessions/$name.json"
    log "restored session $name"
  done
}

# Restore the latest snapshot with tag $2 into directory $1 (SNAPSHOTS: the listing);
# RESULT says "restored" or "none".
restore_tag() {
  local target=$1 tag=$2 err
  RESULT=none
  if [[ -z $(newest "$tag" <<<"$SNAPSHOTS") ]]; then
    log "$tag: no snapshot to restore"
    return 0
  fi
  mkdir -p "$target"
  if ! err=$(restic_ restore latest --host "$SNAPSHOT_HOST" --tag "$tag" --target "$target" 2>&1); then
    LAST_ERROR=$(summarize "$err")
    return 1
  fi
  RESULT=restored
}

do_restore() {
  local tmp when
  mkdir -p "$STATE_DIR"
  rm -f "$STATE_DIR/restore-done" "$STATE_DIR/restore-failed"
  require_config || return 1
  ensure_restic || return 1
  repo_state || return 1
  if [[ $REPO == absent ]]; then
    log "no backup yet for this workspace: starting fresh"
    touch "$STATE_DIR/restore-done"
    return 0
  fi
  if ! SNAPSHOTS=$(list_snapshots) || [[ -z $SNAPSHOTS ]]; then
    LAST_ERROR="cannot list the snapshots"
    return 1
  fi
  tmp=$(mktemp -d "$STATE_DIR/restore.XXXXXX")
  if ! restore_into "$tmp"; then
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$tmp"
  when=$(newest <<<"$SNAPSHOTS")
  touch "$STATE_DIR/restore-done"
  if [[ -n $when ]]; then status_set last_backup_at="$when"; fi
}

restore_into() {
  local tmp=$1 name
  if [[ -n $AGENT_DIR ]]; then
    restore_tag "$tmp/agent" bivy-agent || return 1
    if [[ $RESULT == restored ]]; then
      for name in $KEEP; do
        if [[ -e $AGENT_DIR/$name ]]; then rm -rf "${tmp:?}/agent/$name"; fi
      done
      if ! mkdir -p "$AGENT_DIR" || ! cp -a "$tmp/agent/." "$AGENT_DIR/"; then
        LAST_ERROR="could not copy the restored history into $AGENT_DIR"
        return 1
      fi
      log "restored the agent's history into $AGENT_DIR"
    fi
  fi
  restore_tag "$tmp/agents" bivy-agents || return 1
  if [[ $RESULT == restored ]]; then
    if ! mkdir -p "$AGENTS_HOME" || ! cp -a "$tmp/agents/." "$AGENTS_HOME/"; then
      LAST_ERROR="could not copy the restored agents' config into $AGENTS_HOME"
      return 1
    fi
    log "restored the other agents' config dirs into $AGENTS_HOME"
  fi
  if has_worktree; then
    restore_tag "$tmp/workspace" bivy-workspace || return 1
    if [[ $RESULT == restored ]]; then
      apply_workspace "$tmp/workspace"
      log "restored the uncommitted changes into $WORKSPACE_DIR"
    fi
  fi
}

main() {
  local cmd=${1:-run} force=0 attempt=1
  if [[ ${2:-} == --force ]]; then force=1; fi
  mkdir -p "$STATE_DIR"
  exec 8>"$STATE_DIR/lock"
  flock -w 900 8 || { log "another backup is still running"; exit 75; }
  case $cmd in
    run)
      if ! do_backup "$force"; then
        log "backup failed: $LAST_ERROR"
        status_set backup_error="backup failed: $LAST_ERROR"
        exit 1
      fi
      ;;
    pre-delete)
      while ! do_backup 0 1; do
        log "backup before deletion failed (attempt $attempt of $RETRIES): $LAST_ERROR"
        if ((attempt >= RETRIES)); then
          status_set backup_error="final backup before deletion failed: $LAST_ERROR; the VM stays until its hard lifetime"
          exit 1
        fi
        attempt=$((attempt + 1))
        sleep "$RETRY_DELAY"
      done
      ;;
    restore)
      if ! do_restore; then
        touch "$STATE_DIR/restore-failed"
        log "restore failed: $LAST_ERROR"
        status_set backup_error="restore failed: $LAST_ERROR"
        exit 1
      fi
      ;;
    *)
      echo "usage: backup [run [--force] | pre-delete | restore]" >&2
      exit 64
      ;;
  esac
}

main "$@"
