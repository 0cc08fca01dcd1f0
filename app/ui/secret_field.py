"""A masked line edit for secrets that never shows what the keychain holds."""

from __future__ import annotations

from PySide6.QtWidgets import QLineEdit, QWidget

STORED = "stored in keychain — type to replace"


class SecretField(QLineEdit):
    """A masked field that never shows a stored secret; empty means "keep what is stored".

    Attributes:
        stored: the keychain holds a value for it (the placeholder says so; the value stays out).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEchoMode(QLineEdit.EchoMode.Password)
        self.stored = False

    def set_stored(self, stored: bool, env: str | None = None) -> None:
        self.stored = stored
        if env:
            self.setPlaceholderText(f"supplied by ${env} (wins over the keychain)")
        else:
            self.setPlaceholderText(STORED if stored else "not set")
