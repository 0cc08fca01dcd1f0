"""Reusable test helpers. Fixtures are registered suite-wide (tests/conftest.py → fixtures.py).

- ``fixtures.py``: ``secret_service`` (a real private gnome-keyring over D-Bus),
  ``hetzner_api`` (the Hetzner emulator served on 127.0.0.1), ``cli`` (runs ``python -m app``
  in a child process with the test's isolated environment). See its docstring for usage.
- ``secret_service.py``: ``secret_service_session()``, the context manager behind the fixture.
- ``memory_keyring.py``: ``MemoryKeyring``; a child process can use it with
  ``PYTHON_KEYRING_BACKEND=tests.support.memory_keyring.MemoryKeyring`` (cwd = repo root).
- ``sshd.py``: a real OpenSSH server (and ttyd) on 127.0.0.1.
"""
