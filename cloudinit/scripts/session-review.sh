#!/bin/bash
# Review before merge (issue 15): what a session changed against its base, and its branch out of
# the disposable VM. Runs as root (the app: `sudo -n` as dev over SSH). It is not in the user
# data (no room left there): the app installs its own version as
# /usr/local/lib/bivy/session-review on first use in a workspace (checked by sha256), and from
# then on `session diff|push` on the VM hand over to it too.
#
#   session-review diff SESSION [--json]      committed changes since the base (git diff --stat
#                                              base...HEAD) and, apart, the uncommitted ones
#   session-review push SESSION [--remote-url URL] [COMMIT OPTIONS]
#                                              the git token on stdin (one line); pushes HEAD to
#                                              the session's branch; prints a JSON summary
#   session-review bundle SESSION [COMMIT OPTIONS] [--have COMMIT]...
#                                              a git bundle of the branch (without what the
#                                              caller has, --have) in dev's home
#                                              (~/bivy-outgoing/SESSION.bundle, for the app to
#                                              fetch over SFTP and delete); prints a JSON summary
#   session-review commit SESSION --commit-message M [--author-name N] [--author-email E]
#   COMMIT OPTIONS: --commit-message M commits the uncommitted work first (all of it, untracked
#   files too); without it push and bundle refuse while there is any (exit 3).
#
# Sessions (notes/CONTRACTS2.md): main is the repository folder itself; another session's
# worktree is $BIVY_REPO_DIR/.bivy/worktrees/NAME, its branch and base are in
# $BIVY_STATE_DIR/sessions/NAME.json. main's base: its JSON's, else its upstream, else where its
# branch started on this VM (the oldest reflog entry).
#
# Trust: the work tree, its .git and the repository's config are the agent's (it writes them from
# the container). Root never runs git with that config or its hooks: diffs, pushes and bundles
# run in a throwaway bare repository in RAM that borrows the objects (alternates), with no config,
# no hooks and a fresh index. Only a commit the user asked for runs git in the repository itself,
# inside the devcontainer as its user (where the agent runs anyway), or, without a container, as
# the files' owner with no way to gain privileges (setpriv --no-new-privs) and hooks off.
# The token: read from stdin into a file in RAM (tmpfs), opened as fd 3 and deleted at once; git's
# askpass reads /proc/self/fd/3. It is never in argv, the environment, a log or on disk.
#
# Exit status: 0 done; 1 failed; 2 usage; 3 uncommitted work (push/bundle without a message);
# 4 nothing to push to (no remote, or not https).
set -euo pipefail
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_COMMON_DIR GIT_OBJECT_DIRECTORY \
    GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_CONFIG_PARAMETERS GIT_CONFIG_COUNT index
# shellcheck source=/dev/null
. "${BIVY_LIB_DIR:-{{ lib_dir }}}/lib.sh"

die() {
    printf 'session-review: %s\n' "$1" >&2
    exit "${2:-1}"
}

usage() {
    die "usage: session-review diff|push|bundle|commit SESSION [--json] [--remote-url URL] [--commit-message M] [--author-name N] [--author-email E]" 2
}

[ $# -ge 2 ] || usage
verb=$1 session=$2
shift 2
json=0 remote_url="" message="" commit_asked=0 author_name="" author_email="" haves=()
while [ $# -gt 0 ]; do
    case "$1" in
        --json) json=1 ;;
        --remote-url | --commit-message | --author-name | --author-email | --have)
            [ $# -ge 2 ] || usage
            case "$1" in
                --remote-url) remote_url=$2 ;;
                --commit-message) message=$2 commit_asked=1 ;;
                --author-name) author_name=$2 ;;
                --author-email) author_email=$2 ;;
                --have)
                    [[ "$2" =~ ^[0-9a-f]{40,64}$ ]] || usage
                    haves+=("$2")
                    ;;
            esac
            shift
            ;;
        *) usage ;;
    esac
    shift
done
case "$verb" in diff | push | bundle | commit) ;; *) usage ;; esac
[[ "$session" =~ ^[a-z0-9][a-z0-9-]{0,29}$ ]] || die "not a session name: $session" 2
if [ "$commit_asked" = 1 ] && [ -z "$(printf '%s' "$message" | tr -d '[:space:]')" ]; then
    die "the commit message is empty" 2
fi
[ "$verb" != commit ] || [ "$commit_asked" = 1 ] || die "commit needs --commit-message" 2

bivy_load_env
repo=$BIVY_REPO_DIR
common="$repo/.git"
[ -d "$common" ] || die "the workspace's repository is not on this VM ($repo)"

# Ref lookups only (no index, no work tree, nothing that runs a configured command).
repo_git() {
    git -c safe.directory='*' --git-dir="$1" "${@:2}"
}

meta="$BIVY_STATE_DIR/sessions/$session.json"
branch="" base="" container_path=""
if [ -r "$meta" ]; then
    branch=$(jq -r '.branch // ""' "$meta")
    base=$(jq -r '.base // ""' "$meta")
    container_path=$(jq -r '.worktree // ""' "$meta")
elif [ "$session" != main ]; then
    die "there is no session $session on this workspace"
fi
if [ "$session" = main ]; then
    worktree=$repo gitdir=$common
    container_path=${BIVY_REMOTE_WORKSPACE:-$container_path}
else
    worktree="$repo/.bivy/worktrees/$session"
    [ -f "$worktree/.git" ] || die "session $session has no worktree at $worktree"
    link=$(sed -n 's/^gitdir: //p' "$worktree/.git" | head -n 1)
    # The link may be a container path: the admin dir's name is what both sides share.
    gitdir="$common/worktrees/${link##*/}"
    if [ -z "$link" ] || [ ! -d "$gitdir" ]; then
        die "session $session's worktree is not registered in $common"
    fi
fi

resolve_head() {
    head=$(repo_git "$gitdir" rev-parse -q --verify 'HEAD^{commit}') ||
        die "session $session has no commit yet"
    local current
    current=$(repo_git "$gitdir" symbolic-ref -q --short HEAD || true)
    branch=${current:-$branch}
    [ -n "$branch" ] || die "session $session is on a detached HEAD and has no branch"
}
resolve_head

# The base, resolved in the main repository (a session's default base is main's HEAD).
base_commit=""
if [ -n "$base" ]; then
    base_commit=$(repo_git "$common" rev-parse -q --verify "$base^{commit}") ||
        die "session $session's base $base is not in the repository"
else
    base=$(repo_git "$gitdir" rev-parse -q --verify --symbolic-full-name '@{upstream}' 2>/dev/null || true)
    if [ -n "$base" ]; then
        base_commit=$(repo_git "$gitdir" rev-parse -q --verify "$base^{commit}" || true)
    fi
    if [ -z "$base_commit" ]; then
        base_commit=$(repo_git "$common" reflog show --format=%H "refs/heads/$branch" -- 2>/dev/null | tail -n 1)
        base="the start of $branch on this VM"
    fi
    [ -n "$base_commit" ] || die "session $session has no known base to compare with"
fi

ram=/dev/shm
[ "$(stat -f -c %T "$ram" 2>/dev/null || true)" = tmpfs ] || ram=/run
tmp=$(mktemp -d "$ram/bivy-review.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
scratch="$tmp/repo.git"

# git in the throwaway repository: empty config (not even the system's), no hooks, fresh index.
tgit() {
    GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$tmp" GIT_INDEX_FILE="${index:-$tmp/index}" \
        git --git-dir="$scratch" "$@"
}
tgit init -q --bare --template= "$scratch"
mkdir -p "$scratch/objects/info" "$scratch/info"
printf '%s\n' "$common/objects" >"$scratch/objects/info/alternates"
if [ -r "$common/info/exclude" ]; then
    cp "$common/info/exclude" "$scratch/info/exclude"
fi
wgit() {
    tgit --work-tree="$worktree" "$@"
}

merge_base=""
uncommitted_files=0
# Diff data for $head: committed (merge base..head) and uncommitted (work tree vs head, untracked
# files as intent-to-add entries of a fresh index, so nothing is hashed into any object store).
collect() {
    merge_base=$(tgit merge-base "$base_commit" "$head" || true)
    [ -n "$merge_base" ] || merge_base=$base_commit
    local range=("$merge_base" "$head") opts=(--no-ext-diff --no-textconv -M -z)
    tgit diff "${opts[@]}" --numstat "${range[@]}" >"$tmp/c.numstat"
    tgit diff "${opts[@]}" --name-status "${range[@]}" >"$tmp/c.status"
    tgit log -z --format='%h%x1f%s' --max-count=200 "$merge_base..$head" >"$tmp/c.log"
    rm -f "$tmp/index"
    wgit read-tree "$head"
    wgit ls-files -z --others --exclude-standard >"$tmp/u.new"
    if [ -s "$tmp/u.new" ]; then
        wgit add -N --pathspec-from-file="$tmp/u.new" --pathspec-file-nul >/dev/null 2>&1 ||
            echo "session-review: some untracked files could not be listed" >&2
    fi
    # Untracked proper (not even staged): against a copy of the session's own index, read only.
    cp "$tmp/u.new" "$tmp/u.untracked"
    if [ -s "$tmp/u.new" ] && cp "$gitdir/index" "$tmp/own-index" 2>/dev/null; then
        index="$tmp/own-index" wgit ls-files -z --others --exclude-standard \
            >"$tmp/u.untracked" 2>/dev/null || cp "$tmp/u.new" "$tmp/u.untracked"
    fi
    wgit diff "${opts[@]}" --numstat "$head" >"$tmp/u.numstat"
    wgit diff "${opts[@]}" --name-status "$head" >"$tmp/u.status"
    uncommitted_files=$(wgit diff --no-ext-diff -M -z --name-only "$head" | tr -cd '\0' | wc -c)
}

print_diff() {
    if [ "$json" = 1 ]; then
        local args=() part
        for part in c.numstat c.status c.log u.numstat u.status u.untracked; do
            base64 -w 0 "$tmp/$part" >"$tmp/$part.b64"
            args+=(--rawfile "${part/./_}" "$tmp/$part.b64")
        done
        jq -n --arg session "$session" --arg branch "$branch" --arg base "$base" \
            --arg base_commit "$merge_base" --arg head "$head" \
            --arg worktree "${container_path:-$worktree}" "${args[@]}" \
            '{session: $session, branch: $branch, base: $base, base_commit: $base_commit,
              head: $head, worktree: $worktree, encoding: "base64", log: $c_log,
              committed: {numstat: $c_numstat, name_status: $c_status},
              uncommitted: {numstat: $u_numstat, name_status: $u_status, untracked: $u_untracked}}'
        return
    fi
    local commits
    commits=$(tgit rev-list --count "$merge_base..$head")
    printf 'Session %s: branch %s, %s commit(s) since %s (%s)\n' \
        "$session" "$branch" "$commits" "$base" "${merge_base:0:12}"
    tgit diff --no-ext-diff --no-textconv -M --stat "$merge_base" "$head"
    if [ "$uncommitted_files" -gt 0 ]; then
        printf '\nUncommitted changes (in no commit yet):\n'
        wgit diff --no-ext-diff --no-textconv -M --stat "$head"
    fi
}

# The user's commit of everything uncommitted (see Trust above for where git runs).
commit_work() {
    # shellcheck disable=SC2016  # expanded by the inner shell
    local script='set -e
[ -n "${GIT_AUTHOR_NAME:-}" ] || git config user.name >/dev/null || export GIT_AUTHOR_NAME=Bivy GIT_COMMITTER_NAME=Bivy
[ -n "${GIT_AUTHOR_EMAIL:-}" ] || git config user.email >/dev/null || export GIT_AUTHOR_EMAIL=bivy@localhost GIT_COMMITTER_EMAIL=bivy@localhost
git add -A
git commit -q -F -'
    local ident=()
    if [ -n "$author_name" ]; then
        ident+=("GIT_AUTHOR_NAME=$author_name" "GIT_COMMITTER_NAME=$author_name")
    fi
    if [ -n "$author_email" ]; then
        ident+=("GIT_AUTHOR_EMAIL=$author_email" "GIT_COMMITTER_EMAIL=$author_email")
    fi
    if [ -n "${BIVY_CONTAINER_ID:-}" ]; then
        [ -n "$container_path" ] || die "session $session's folder in the devcontainer is not known"
        local envs=() pair
        for pair in "${ident[@]}"; do envs+=(-e "$pair"); done
        printf '%s\n' "$message" | "${BIVY_DOCKER:-docker}" exec -i -u "${BIVY_REMOTE_USER:-root}" \
            -w "$container_path" "${envs[@]}" "$BIVY_CONTAINER_ID" sh -c "$script" >&2 ||
            die "committing in session $session failed (see the messages above)"
    else
        local owner
        owner=$(stat -c '%u %g' "$worktree")
        printf '%s\n' "$message" | setpriv --reuid="${owner% *}" --regid="${owner#* }" --clear-groups \
            --no-new-privs env HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
            GIT_DIR="$gitdir" GIT_WORK_TREE="$worktree" GIT_CONFIG_COUNT=3 \
            GIT_CONFIG_KEY_0=core.hooksPath GIT_CONFIG_VALUE_0=/dev/null \
            GIT_CONFIG_KEY_1=core.fsmonitor GIT_CONFIG_VALUE_1=false \
            GIT_CONFIG_KEY_2=commit.gpgSign GIT_CONFIG_VALUE_2=false \
            "${ident[@]}" sh -c "cd \"\$GIT_WORK_TREE\" && $script" >&2 ||
            die "committing in session $session failed (see the messages above)"
    fi
    resolve_head
}

# Uncommitted work: commit it when asked, else refuse (exit 3).
settle_uncommitted() {
    collect
    if [ "$uncommitted_files" -gt 0 ]; then
        [ "$commit_asked" = 1 ] || die "session $session has uncommitted changes in $uncommitted_files file(s): commit them first (give a commit message, or commit from its terminal)" 3
        commit_work
        committed=true
    elif [ "$verb" = commit ]; then
        die "session $session has nothing to commit"
    fi
}

# Tells the repository the branch's commit is safe outside the VM (`session rm` counts commits
# not on any refs/remotes/*): the ref refs/remotes/bivy-pushed/BRANCH, written as the files' owner.
mark_pushed() {
    local owner
    owner=$(stat -c '%u %g' "$common")
    setpriv --reuid="${owner% *}" --regid="${owner#* }" --clear-groups --no-new-privs \
        env HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
        git -c core.hooksPath=/dev/null --git-dir="$common" \
        update-ref "refs/remotes/bivy-pushed/$branch" "$head" >/dev/null 2>&1 || true
}

redact() {
    printf '%s' "$1" | sed -E 's#^([a-z+]+://)[^/@]*@#\1#'
}

committed=false
case "$verb" in
    diff)
        collect
        print_diff
        ;;
    commit)
        settle_uncommitted
        jq -n --arg s "$session" --arg b "$branch" --arg c "$head" '{session: $s, branch: $b, commit: $c, committed: true}'
        ;;
    push)
        if [ -z "$remote_url" ]; then
            remote_url=$(repo_git "$common" config --get remote.origin.url || true)
        fi
        [ -n "$remote_url" ] || die "the workspace's repository has no remote to push to" 4
        case "$remote_url" in
            https://*) ;;
            *) die "Bivy pushes over https only (the VM holds no SSH key for git): $(redact "$remote_url")" 4 ;;
        esac
        IFS= read -r token || true
        [ -n "${token:-}" ] || die "no git token was given on stdin"
        case "$token" in *[[:space:]]*) die "the git token contains white space" ;; esac
        settle_uncommitted
        (umask 077 && printf '%s\n' "$token" >"$tmp/token")
        unset token
        exec 3<"$tmp/token"
        rm -f "$tmp/token"
        status=0
        GIT_ASKPASS="$BIVY_LIB_DIR/git-askpass" BIVY_GIT_TOKEN_FILE=/proc/self/fd/3 GIT_TERMINAL_PROMPT=0 \
            tgit -c credential.helper= -c core.askPass= push --porcelain "$remote_url" \
            "$head:refs/heads/$branch" >"$tmp/push.out" 2>"$tmp/push.err" || status=$?
        exec 3<&-
        if [ "$status" != 0 ]; then
            sed -n '/^!/p' "$tmp/push.out" >&2
            tail -n 5 "$tmp/push.err" >&2
            die "pushing $branch to $(redact "$remote_url") failed"
        fi
        mark_pushed
        outcome=$(awk -F '\t' '/^[ *+=-]\t/ { print $3; exit }' "$tmp/push.out")
        jq -n --arg s "$session" --arg b "$branch" --arg c "$head" --arg r "$(redact "$remote_url")" \
            --arg o "$outcome" --argjson committed "$committed" \
            '{session: $s, branch: $b, commit: $c, remote: $r, outcome: $o, committed: $committed}'
        ;;
    bundle)
        settle_uncommitted
        home=""
        if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
            home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        fi
        if [ -n "$home" ] && [ -d "$home" ]; then
            outdir="$home/bivy-outgoing"
            install -d -m 0700 -o "$SUDO_USER" -g "$(id -g "$SUDO_USER")" "$outdir"
        else
            outdir="$BIVY_STATE_DIR/outgoing"
            install -d -m 0700 "$outdir"
        fi
        out="$outdir/$session.bundle"
        tgit update-ref "refs/heads/$branch" "$head"
        # Commits the caller has (--have) stay out: the bundle carries only what is new.
        excludes=()
        for have in "${haves[@]}"; do
            if tgit cat-file -e "$have^{commit}" 2>/dev/null; then
                excludes+=("^$have")
            fi
        done
        if [ "${excludes[*]:-}" ] && [ "$(tgit rev-list --count "$head" "${excludes[@]}")" = 0 ]; then
            # Nothing new: git refuses an empty bundle, so it carries the tip on its parent.
            excludes=()
            if tgit rev-parse -q --verify "$head^" >/dev/null; then
                excludes=("^$head^")
            fi
        fi
        tgit bundle create -q "$out.partial" "refs/heads/$branch" "${excludes[@]}"
        chmod 0600 "$out.partial"
        if [ -n "$home" ] && [ -d "$home" ]; then
            chown "$SUDO_USER:$(id -g "$SUDO_USER")" "$out.partial"
        fi
        mv -f "$out.partial" "$out"
        mark_pushed
        jq -n --arg s "$session" --arg b "$branch" --arg c "$head" --arg p "$out" \
            --argjson size "$(stat -c %s "$out")" --argjson committed "$committed" \
            '{session: $s, branch: $b, commit: $c, path: $p, size: $size, committed: $committed}'
        ;;
esac
