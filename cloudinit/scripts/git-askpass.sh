#!/bin/sh
# Answers git's credential prompts from the one-time token file; the bootstrap deletes that file
# right after the clone, and the token never reaches .git/config or a command line.
case "${1:-}" in
    Username*) printf '%s\n' "{{ git_username }}" ;;
    *) cat "${BIVY_GIT_TOKEN_FILE:?}" ;;
esac
