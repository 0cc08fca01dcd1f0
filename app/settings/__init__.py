"""User settings (pydantic, JSON with a schema version under platformdirs) and the SecretStore."""

from app.settings.files import (
    FileNotice,
    HeldLock,
    LockBusy,
    file_lock,
    move_aside,
    take_notices,
    try_hold,
)
from app.settings.model import (
    SCHEMA_VERSION,
    Account,
    BackupSettings,
    Defaults,
    Settings,
    SettingsChanged,
    SettingsMovedAside,
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
    "FileNotice",
    "HeldLock",
    "LockBusy",
    "SecretKeys",
    "SecretStore",
    "Settings",
    "SettingsChanged",
    "SettingsMovedAside",
    "atomic_write_text",
    "config_dir",
    "data_dir",
    "file_lock",
    "load_settings",
    "move_aside",
    "save_settings",
    "settings_path",
    "take_notices",
    "try_hold",
]
