"""Entry point for ``python -m app``."""

from app.launcher import main

raise SystemExit(main())
