"""Colours that read in light and dark system themes: session states, warnings, errors.

Every colour comes in a light-theme and a dark-theme variant; which one applies is decided by
the lightness of the palette's base colour (what lists and tables are painted on), so a dark
system theme gets the light variants and the other way round. ``contrast_ratio`` is the WCAG
2.x formula the tests hold every variant to (at least 3:1 against the base colour).
"""

from __future__ import annotations

from enum import StrEnum

from PySide6.QtGui import QColor, QGuiApplication, QPalette

from app.domain import AgentState, SessionReport

__all__ = [
    "SessionState",
    "contrast_ratio",
    "dark_palette",
    "is_dark",
    "light_palette",
    "session_state",
    "state_colour",
    "tone",
    "tone_on",
]


class SessionState(StrEnum):
    """What a session's row says at a glance (its agent's state, or that it failed)."""

    WORKING = "working"
    WAITING = "needs you"
    IDLE = "idle"
    FAILED = "failed"
    UNKNOWN = "unknown"


def session_state(session: SessionReport) -> SessionState:
    if session.failed:
        return SessionState.FAILED
    return {
        AgentState.WORKING: SessionState.WORKING,
        AgentState.WAITING: SessionState.WAITING,
        AgentState.IDLE: SessionState.IDLE,
    }.get(session.state, SessionState.UNKNOWN)


#: (on a light base, on a dark base). Light variants are dark enough for white, dark variants
#: light enough for a near-black base; the amber and red are the window's earlier warning and
#: error colours.
_TONES: dict[str, tuple[str, str]] = {
    SessionState.WORKING: ("#1f5fbf", "#7fb2ff"),
    SessionState.WAITING: ("#b35c00", "#ffb35c"),
    SessionState.IDLE: ("#5f6b76", "#a9b4bf"),
    SessionState.FAILED: ("#b00020", "#ff7b86"),
    SessionState.UNKNOWN: ("#6e6e6e", "#9a9a9a"),
    "warning": ("#b35c00", "#ffb35c"),
    "error": ("#b00020", "#ff7b86"),
}


def is_dark(palette: QPalette | None = None) -> bool:
    """Whether ``palette`` (default: the application's) paints on a dark base."""
    palette = palette if palette is not None else QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Base).lightnessF() < 0.5


def tone(name: str, palette: QPalette | None = None) -> QColor:
    """The colour called ``name`` (a ``SessionState`` value, "warning" or "error") for the
    palette's lightness."""
    light, dark = _TONES[name]
    return QColor(dark if is_dark(palette) else light)


def state_colour(state: SessionState, palette: QPalette | None = None) -> QColor:
    return tone(state, palette)


def tone_on(name: str, background: QColor) -> QColor:
    """The variant of ``name`` that reads on ``background`` (e.g. a marker on a disc)."""
    light, dark = _TONES[name]
    return QColor(dark if background.lightnessF() < 0.5 else light)


def _luminance(colour: QColor) -> float:
    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    return (
        0.2126 * channel(colour.redF())
        + 0.7152 * channel(colour.greenF())
        + 0.0722 * channel(colour.blueF())
    )


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours, 1 (same) to 21 (black on white)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _palette(colours: dict[QPalette.ColorRole, str], disabled_text: str) -> QPalette:
    palette = QPalette()
    for role, value in colours.items():
        palette.setColor(role, QColor(value))
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled_text))
    return palette


def dark_palette() -> QPalette:
    """A dark system theme (what the tests and the screenshots force; the app itself takes
    the system's palette)."""
    role = QPalette.ColorRole
    return _palette(
        {
            role.Window: "#202226",
            role.WindowText: "#e6e8eb",
            role.Base: "#17181b",
            role.AlternateBase: "#1f2125",
            role.Text: "#e6e8eb",
            role.Button: "#2a2d32",
            role.ButtonText: "#e6e8eb",
            role.Highlight: "#3d6fb6",
            role.HighlightedText: "#ffffff",
            role.ToolTipBase: "#2a2d32",
            role.ToolTipText: "#e6e8eb",
            role.PlaceholderText: "#8b9096",
            role.Link: "#7fb2ff",
            role.Light: "#3a3d42",
            role.Midlight: "#33363b",
            role.Mid: "#2b2e33",
            role.Dark: "#111214",
            role.Shadow: "#000000",
            role.BrightText: "#ffffff",
        },
        "#7c8187",
    )


def light_palette() -> QPalette:
    """A light system theme, for screenshots that must not depend on the machine's."""
    role = QPalette.ColorRole
    return _palette(
        {
            role.Window: "#f3f4f6",
            role.WindowText: "#1d1f23",
            role.Base: "#ffffff",
            role.AlternateBase: "#f6f7f9",
            role.Text: "#1d1f23",
            role.Button: "#eceef1",
            role.ButtonText: "#1d1f23",
            role.Highlight: "#2f6fcf",
            role.HighlightedText: "#ffffff",
            role.ToolTipBase: "#ffffdc",
            role.ToolTipText: "#1d1f23",
            role.PlaceholderText: "#80858c",
            role.Link: "#1f5fbf",
            role.Light: "#ffffff",
            role.Midlight: "#e3e5e8",
            role.Mid: "#c4c8cd",
            role.Dark: "#9a9fa6",
            role.Shadow: "#5a5e64",
            role.BrightText: "#ffffff",
        },
        "#9a9fa6",
    )
