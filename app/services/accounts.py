"""Accounts: which cloud accounts exist, their option values (env or keychain), and login."""

# An account's non-secret options live in settings; its secret options in the keychain under
# ``SecretKeys.account(id, key)``. An environment variable listed in the option's ``env`` wins over
# both (``BIVY_HETZNER_TOKEN``, ``HCLOUD_TOKEN``), and a provider kind with no configured account
# but such a variable set gets an implicit account named after the kind.

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import httpx

from app.errors import AuthError, InvalidInput, SecretStoreError
from app.providers.base import Provider, ProviderOption
from app.settings import Account, SecretKeys, SecretStore, Settings

__all__ = [
    "add_account",
    "effective_accounts",
    "env_value",
    "find_account",
    "needs_no_account",
    "open_provider",
    "provider_class",
    "remove_account",
    "resolve_options",
    "user_accounts",
]

_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$")


def provider_class(kind: str) -> type[Provider]:
    """The provider class of ``kind``; ``InvalidInput`` naming the known kinds otherwise."""
    from app.providers.registry import PROVIDERS

    try:
        return PROVIDERS[kind]
    except KeyError:
        known = ", ".join(PROVIDERS) or "none"
        raise InvalidInput(f"unknown provider {kind!r}", hint=f"Known providers: {known}") from None


def env_value(option: ProviderOption, environ: Mapping[str, str] | None = None) -> str | None:
    """The first non-empty environment variable of ``option.env``, or None."""
    env = os.environ if environ is None else environ
    for name in option.env:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _env_supplies_secrets(cls: type[Provider], environ: Mapping[str, str] | None) -> bool:
    secret_required = [o for o in cls.options if o.secret and o.required]
    return bool(secret_required) and all(env_value(o, environ) for o in secret_required)


def effective_accounts(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> list[Account]:
    """The configured accounts, plus an implicit ``<kind>`` account for each provider kind that
    has none configured but whose secrets all come from environment variables, or that needs
    nothing configured at all (``local``)."""
    from app.providers.registry import PROVIDERS

    accounts = list(settings.accounts)
    configured_kinds = {a.provider for a in accounts}
    taken_ids = {a.id for a in accounts}
    for kind, cls in PROVIDERS.items():
        if kind in configured_kinds or kind in taken_ids:
            continue
        if needs_no_account(cls):
            # Nothing to configure (the local provider): usable out of the box.
            accounts.append(Account(id=kind, provider=kind, label=kind.capitalize()))
        elif _env_supplies_secrets(cls, environ):
            names = ", ".join(o.env[0] for o in cls.options if o.secret and o.env)
            accounts.append(
                Account(id=kind, provider=kind, label=f"{cls.display_name} (from {names})")
            )
    return accounts


def needs_no_account(cls: type[Provider]) -> bool:
    """The provider has nothing to configure (the local provider): always usable."""
    return not any(o.required for o in cls.options)


def user_accounts(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Account]:
    """The accounts the user configured or supplied through the environment: the effective
    ones without those that need no account (the first-run window asks for one while this is
    empty, and offers the local provider meanwhile)."""
    return [
        a
        for a in effective_accounts(settings, environ)
        if a in settings.accounts or not needs_no_account(provider_class(a.provider))
    ]


def find_account(
    settings: Settings,
    account_id: str | None = None,
    *,
    provider: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Account:
    """The account to use: ``account_id`` if given, else the default account (of ``provider``
    when given), else the only/first account of that provider. ``InvalidInput`` when none fits.
    """
    accounts = effective_accounts(settings, environ)
    if account_id:
        for account in accounts:
            if account.id == account_id:
                if provider and account.provider != provider:
                    raise InvalidInput(
                        f"account {account_id!r} is a {account.provider} account, not {provider}"
                    )
                return account
        raise InvalidInput(
            f"there is no account {account_id!r}",
            hint="List them in Settings → Accounts, or add one with `bivy login <provider>`",
        )
    candidates = [a for a in accounts if provider is None or a.provider == provider]
    default = settings.defaults.account
    for account in candidates:
        if account.id == default:
            return account
    if candidates:
        return candidates[0]
    kind = provider or "hetzner"
    hint = f"Run `bivy login {kind}`"
    if provider:
        names = [n for o in provider_class(provider).options if o.secret for n in o.env]
        if names:
            hint += f", or set {names[0]}"
    raise InvalidInput(f"no {provider + ' ' if provider else ''}account is configured", hint=hint)


def resolve_options(
    account: Account, secrets: SecretStore, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every option value of ``account``: environment, then settings/keychain, then defaults.

    The keychain is consulted only for secret options no environment variable supplies, so a
    machine without a keychain works with tokens from the environment. Raises ``AuthError`` for
    a missing required secret and ``InvalidInput`` for another missing required option.
    Blocking (keychain): call it through ``asyncio.to_thread`` from async code.
    """
    cls = provider_class(account.provider)
    values: dict[str, str] = {}
    for option in cls.options:
        value = env_value(option, environ)
        if value is None:
            if option.secret:
                try:
                    value = secrets.get(SecretKeys.account(account.id, option.key))
                except SecretStoreError:
                    # Without a keychain, an optional secret (e.g. DigitalOcean's self-delete
                    # token) is simply absent; only a required one is an error.
                    if option.required:
                        raise
                    value = None
            else:
                value = account.options.get(option.key) or None
        if value is None and option.default:
            value = option.default
        if value is None:
            if option.required:
                where = f" or set {option.env[0]}" if option.env else ""
                if option.secret:
                    raise AuthError(
                        f"no {option.label} is stored for the {cls.display_name} account "
                        f"{account.id!r}",
                        hint=f"Run `bivy login {account.provider}`{where}",
                        provider=account.provider,
                    )
                raise InvalidInput(
                    f"the {cls.display_name} account {account.id!r} has no {option.label}",
                    hint=f"Set it in Settings → Accounts{where}",
                    provider=account.provider,
                )
            continue
        values[option.key] = value
    return values


def open_provider(
    account: Account,
    secrets: SecretStore,
    transport: httpx.AsyncBaseTransport | None = None,
    environ: Mapping[str, str] | None = None,
) -> Provider:
    """A provider instance for ``account`` with its resolved options (blocking: keychain)."""
    cls = provider_class(account.provider)
    return cls(resolve_options(account, secrets, environ), transport=transport)


def _check_option(option: ProviderOption, value: str) -> None:
    if option.pattern and not re.fullmatch(option.pattern, value):
        # The value itself is never echoed: it may be a secret.
        raise InvalidInput(
            f"that {option.label} does not look right",
            hint="Copy it again from the provider's console, without spaces",
        )


async def add_account(
    settings: Settings,
    secrets: SecretStore,
    kind: str,
    values: Mapping[str, str],
    *,
    account_id: str | None = None,
    label: str = "",
    transport: httpx.AsyncBaseTransport | None = None,
) -> Account:
    """Validate ``values`` against the provider's API, then keep them: secrets in the keychain,
    the rest in ``settings`` (which the caller saves). Replaces an account of the same id.

    Nothing is stored when validation fails.
    """
    cls = provider_class(kind)
    account_id = account_id or kind
    if not _ACCOUNT_ID.match(account_id):
        raise InvalidInput(
            f"{account_id!r} cannot be an account id",
            hint="Use lower-case letters, digits and '-', starting with a letter",
        )
    cleaned: dict[str, str] = {}
    for option in cls.options:
        value = (values.get(option.key) or option.default).strip()
        if not value:
            if option.required:
                raise InvalidInput(f"the {option.label} is required", provider=kind)
            continue
        _check_option(option, value)
        cleaned[option.key] = value
    provider = cls(cleaned, transport=transport)
    try:
        await provider.validate()
    finally:
        await provider.aclose()
    public: dict[str, str] = {}
    for option in cls.options:
        if option.key not in cleaned:
            continue
        if option.secret:
            await secrets.aset(SecretKeys.account(account_id, option.key), cleaned[option.key])
        else:
            public[option.key] = cleaned[option.key]
    account = Account(id=account_id, provider=kind, label=label or cls.display_name, options=public)
    settings.accounts = [a for a in settings.accounts if a.id != account_id] + [account]
    if not settings.defaults.account:
        settings.defaults.account = account_id
    return account


async def remove_account(settings: Settings, secrets: SecretStore, account_id: str) -> None:
    """Forget an account: its keychain secrets and its settings entry (the caller saves)."""
    account = settings.account(account_id)
    if account is None:
        raise InvalidInput(f"there is no account {account_id!r}")
    for option in provider_class(account.provider).options:
        if option.secret:
            await secrets.adelete(SecretKeys.account(account_id, option.key))
    settings.accounts = [a for a in settings.accounts if a.id != account_id]
    if settings.defaults.account == account_id:
        settings.defaults.account = settings.accounts[0].id if settings.accounts else ""
