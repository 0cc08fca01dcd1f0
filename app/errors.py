"""The one exception tree of Bivy: every failure the user may see is a ``BivyError``.

Only the HTTP layer (``app.providers._http``) catches ``httpx`` exceptions; it maps them here::

    BivyError                 any failure with a message fit for the user
    ├── AuthError             token missing, invalid (401) or without permission (403)
    ├── RateLimited           429 after the bounded retries ran out
    ├── QuotaExceeded         the account's resource limit is reached
    ├── NotFound              the resource does not exist (404)
    ├── Conflict              the name is taken or the resource is busy (409/423)
    ├── ProviderUnavailable   5xx, network errors, a type not available in a location
    ├── ActionFailed          an asynchronous provider action ended in error
    ├── Timeout               a wait or request ran out of time
    ├── InvalidInput          the input was rejected (by us or by the provider's 422)
    ├── SecretStoreError      the OS keychain is missing or refused
    ├── SSHError              a tunnel or SSH command failed
    │   └── HostKeyMismatch   the VM presented a key other than the one pinned
    └── BackupError           restic or the object storage failed
"""

from __future__ import annotations


class BivyError(Exception):
    """A failure with a message fit for the user.

    Attributes:
        message: what failed, in one sentence.
        hint: what the user can do about it (may be empty).
        provider: the provider kind involved ("hetzner", …) or "".
        code: the provider's own error code ("uniqueness_error", …) or "".
        request_id: the provider's request/correlation id, for support, or "".
        status: the HTTP status when there was one, else 0.
    """

    default_hint = ""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        provider: str = "",
        code: str = "",
        request_id: str = "",
        status: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        self.provider = provider
        self.code = code
        self.request_id = request_id
        self.status = status

    def one_line(self) -> str:
        """The message, the hint and the request id on one line, for the CLI and dialogs."""
        parts = [self.message.rstrip(".") + "."]
        if self.hint:
            parts.append(self.hint.rstrip(".") + ".")
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.one_line()


class AuthError(BivyError):
    default_hint = "Check the API token in Settings → Accounts, or run `bivy login`"


class RateLimited(BivyError):
    default_hint = "The provider's rate limit was reached; wait a minute and try again"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        hint: str | None = None,
        provider: str = "",
        code: str = "",
        request_id: str = "",
        status: int = 429,
    ) -> None:
        super().__init__(
            message, hint=hint, provider=provider, code=code, request_id=request_id, status=status
        )
        self.retry_after = retry_after


class QuotaExceeded(BivyError):
    default_hint = "Delete unused servers or ask the provider to raise the limit"


class NotFound(BivyError):
    pass


class Conflict(BivyError):
    pass


class ProviderUnavailable(BivyError):
    default_hint = "The provider could not be reached or could not serve this; try again later"


class ActionFailed(BivyError):
    pass


class UnsupportedOperation(BivyError):
    """The provider (or the VM) cannot do this at all, as opposed to failing at it."""

    default_hint = "Choose another provider for this, or do it without Bivy"


class Timeout(BivyError):
    default_hint = "Try again; if it keeps happening, check the provider's status page"


class InvalidInput(BivyError):
    pass


class SecretStoreError(BivyError):
    default_hint = (
        "Install and unlock a keychain (GNOME Keyring, KWallet, macOS Keychain, "
        "Windows Credential Locker), or pass the token in an environment variable"
    )


class SSHError(BivyError):
    pass


class HostKeyMismatch(SSHError):
    default_hint = (
        "The server is not the VM Bivy created, or the connection is being intercepted; "
        "Bivy refuses to connect. Delete and recreate the workspace if you trust the network"
    )


class BackupError(BivyError):
    pass
