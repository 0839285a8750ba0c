"""Debian's headless Chromium, which draws the PNG charts and drives the browser tests.

Playwright's own browser download is not reachable here, so everything that launches a browser
points Playwright at this executable with these flags (``PLAYGROUND_CHROMIUM`` overrides the path).
"""

import os

CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
