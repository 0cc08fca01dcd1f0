"""The desktop application: windows, dialogs, tray and the Qt controllers over the services."""
