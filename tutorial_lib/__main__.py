"""Allow `python -m tutorial_lib`, the same as the `tutorial-lib` command."""

from tutorial_lib.cli import main

raise SystemExit(main())
