"""User settings (pydantic, JSON with a schema version under platformdirs) and the SecretStore."""

from app.settings.model import (
    SCHEMA_VERSION,
    Account,
    BackupSettings,
    Defaults,
    Settings,
    atomic_write_text,
    config_dir,
    data_dir,
    load_settings,
    save_settings,
    settings_path,
)
from app.settings.secrets import SecretKeys, SecretStore

__all__ = [
    "SCHEMA_VERSION",
    "Account",
    "BackupSettings",
    "Defaults",
    "SecretKeys",
    "SecretStore",
    "Settings",
    "atomic_write_text",
    "config_dir",
    "data_dir",
    "load_settings",
    "save_settings",
    "settings_path",
]
