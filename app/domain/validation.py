"""Validation of the user-typed git values (repository URL, branch) that reach the VM."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: Hostnames (and IPv4 literals): labels of letters, digits and '-', never starting with '-'.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
#: An SSH user name (``git`` almost always).
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
#: Characters a repository path may hold: what hosting services use, nothing a shell cares about.
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._~/%+=,@:-]+$")
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.+)$")
MAX_URL_LENGTH = 2048
MAX_BRANCH_LENGTH = 255


def _check_characters(url: str) -> None:
    for ch in url:
        if ch in "\r\n":
            raise ValueError("the repository URL must be one line")
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError("the repository URL contains a control character")
        if ch.isspace():
            raise ValueError("the repository URL must not contain spaces")
        if ord(ch) > 0x7E:
            raise ValueError(f"the repository URL contains {ch!r}; use its percent-encoded form")


def _check_path(path: str) -> None:
    if not path.strip("/"):
        raise ValueError("the repository URL has no repository path")
    bad = sorted({ch for ch in path if not _PATH_CHARS.match(ch)})
    if bad:
        raise ValueError(f"the repository path must not contain {''.join(bad)}")
    if any(part == ".." for part in path.split("/")):
        raise ValueError("the repository path must not contain '..'")
    name = repo_dir_name_from_path(path)
    if not name or name.startswith("-"):
        raise ValueError("the repository URL does not end in a repository name")


def _check_host(host: str) -> None:
    if host.startswith("-"):
        raise ValueError("the host must not start with '-'")
    if not _HOST_RE.match(host):
        raise ValueError(f"{host!r} is not a valid host name")


def repo_dir_name_from_path(path: str) -> str:
    """The directory a clone of ``path`` gets: its last segment without ``.git``."""
    last = path.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if last.endswith(".git"):
        last = last[:-4]
    return "" if last in {"", ".", ".."} else last


#: A repository on this computer: an absolute POSIX path or a Windows drive path.
_WINDOWS_PATH_RE = re.compile(r"^[A-Za-z]:[\\/]")
#: The directory name a local checkout gets on the VM (its folder name, restricted).
_LOCAL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def is_local_repo(value: str) -> bool:
    """True when ``value`` names a git checkout on this computer (an absolute path).

    Such a repository never reaches the VM by URL: the app ships it over SSH as a git bundle
    (the VM's bootstrap waits for it), so no git token is needed on the VM.
    """
    return isinstance(value, str) and (value.startswith("/") or bool(_WINDOWS_PATH_RE.match(value)))


def validate_local_repo_path(path: str) -> str:
    """Return ``path`` if it is an absolute local path whose folder name can name the clone."""
    if len(path) > MAX_URL_LENGTH:
        raise ValueError(f"the repository path is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValueError("the repository path contains a control character or line break")
    name = local_repo_dir_name(path)
    if not _LOCAL_NAME_RE.match(name):
        raise ValueError(
            f"the repository folder name {name!r} must be letters, digits, '.', '_' or '-'"
        )
    return path


def local_repo_dir_name(path: str) -> str:
    """The directory a local checkout gets under /workspaces: its folder name."""
    last = re.split(r"[\\/]", path.rstrip("/\\"))[-1]
    return last[:-4] if last.endswith(".git") else last


def repo_dir_name(url: str) -> str:
    """The directory name under /workspaces for a (valid) repository URL or local path."""
    if is_local_repo(url):
        return local_repo_dir_name(validate_local_repo_path(url))
    url = validate_repo_url(url)
    if "://" in url:
        return repo_dir_name_from_path(urlsplit(url).path)
    match = _SCP_RE.match(url)
    assert match is not None  # validate_repo_url accepted it as scp-style
    return repo_dir_name_from_path(match.group("path"))


def validate_repo_url(url: str) -> str:
    """Return ``url`` if it is an https:// or SSH git URL Bivy can clone, else raise ``ValueError``.

    Accepted: ``https://host[:port]/path``, ``ssh://[user@]host[:port]/path`` and the scp-like
    ``[user@]host:path``. Rejected with a reason: other schemes (file://, http://, ext::…),
    credentials in the URL (the token has its own field and must not end up in labels or logs),
    whitespace, control characters, shell metacharacters and anything that starts with '-'
    (git and ssh would read it as an option).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("enter the repository URL (https://… or git@host:owner/repo.git)")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the repository URL is longer than {MAX_URL_LENGTH} characters")
    _check_characters(url)
    if url.startswith("-"):
        raise ValueError("the repository URL must not start with '-'")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in {"https", "ssh"}:
            raise ValueError(f"'{scheme}://' URLs are not supported; use https:// or ssh://")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"the repository URL is malformed ({exc})") from None
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise ValueError("the repository URL must not contain '?' or '#'")
        host = parts.hostname or ""
        if not host:
            raise ValueError("the repository URL has no host")
        _check_host(host)
        if port is not None and not 0 < port < 65536:
            raise ValueError("the port is out of range")
        if parts.password is not None:
            raise ValueError("remove the token from the URL; enter it in the token field")
        if parts.username is not None:
            if scheme == "https":
                raise ValueError("remove the user name from the URL; use the token field")
            if not _USER_RE.match(parts.username):
                raise ValueError(f"{parts.username!r} is not a valid SSH user name")
        _check_path(parts.path)
        return url
    match = _SCP_RE.match(url)
    if match is None:
        raise ValueError("use an https:// URL, an ssh:// URL or git@host:owner/repo.git")
    user, host, path = match.group("user"), match.group("host"), match.group("path")
    if user is not None and not _USER_RE.match(user):
        raise ValueError(f"{user!r} is not a valid SSH user name")
    _check_host(host)
    if path.startswith("-"):
        raise ValueError("the repository path must not start with '-'")
    _check_path(path)
    return url


def validate_repo_source(value: str) -> str:
    """Return ``value`` if it is a cloneable URL or a local checkout's absolute path."""
    if is_local_repo(value):
        return validate_local_repo_path(value)
    return validate_repo_url(value)


def validate_branch(branch: str) -> str:
    """Return ``branch`` if git accepts it as a branch name (``git check-ref-format --branch``).

    Raises ``ValueError`` naming the broken rule.
    """
    if not isinstance(branch, str) or not branch:
        raise ValueError("the branch name is empty")
    if len(branch) > MAX_BRANCH_LENGTH:
        raise ValueError(f"the branch name is longer than {MAX_BRANCH_LENGTH} characters")
    for ch in branch:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError("the branch name contains a control character or line break")
        if ch == " ":
            raise ValueError("the branch name must not contain spaces")
        if ch in "~^:?*[\\":
            raise ValueError(f"the branch name must not contain {ch!r}")
    if branch.startswith("-"):
        raise ValueError("the branch name must not start with '-'")
    if branch == "@":
        raise ValueError("'@' is not a valid branch name")
    if ".." in branch:
        raise ValueError("the branch name must not contain '..'")
    if "@{" in branch:
        raise ValueError("the branch name must not contain '@{'")
    if branch.startswith("/") or branch.endswith("/") or "//" in branch:
        raise ValueError("the branch name must not start or end with '/' or contain '//'")
    if branch.endswith("."):
        raise ValueError("the branch name must not end with '.'")
    for part in branch.split("/"):
        if part.startswith("."):
            raise ValueError("no part of the branch name may start with '.'")
        if part.endswith(".lock"):
            raise ValueError("no part of the branch name may end with '.lock'")
    return branch
