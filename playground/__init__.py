"""Prefix Playground engine: a frozen causal LM plus small prefixes beside it.

Nothing here imports gradio and nothing runs at import time; the web app (app.py) and the
CLI (``python -m playground``) only wire their inputs to these modules.
"""

__version__ = "0.1.0"
