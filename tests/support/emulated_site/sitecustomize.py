"""In a child process of a test (PYTHONPATH set by tests/conftest.py) that talks to a served
provider emulator: once the app imports app.services.toolkit_send, its sends of Bivy's tools to
emulated servers go to tests/support/emulated_vm.py. Nothing is imported before the app does."""

import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path

_MODULE = "app.services.toolkit_send"


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            execute(module)
            root = str(Path(__file__).resolve().parents[3])  # the checkout
            sys.path.insert(0, root)
            try:
                from tests.support.emulated_vm import install

                module.send_toolkit = install()
            finally:
                sys.path.remove(root)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get("BIVY_HETZNER_API_URL"):
    sys.meta_path.insert(0, _Hook())
