"""The Gradio UI: one module per tab, each wiring components to ``playground.service.Playground``.

No logic lives here beyond turning engine results into component updates; everything the
UI does is a method of ``Playground`` and is tested without a browser.
"""
