"""Prefix Playground, the web app: ``python app.py`` (see ``--help``). The app is ``ui/app.py``."""

import sys

from ui.app import main

if __name__ == "__main__":
    sys.exit(main())
