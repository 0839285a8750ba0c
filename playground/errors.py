"""The one exception type the engine raises for problems a user can fix."""


class PlaygroundError(Exception):
    """A problem with the user's input or environment, with a message saying how to fix it.

    The CLI prints it without a traceback; the web app shows it with ``gr.Error``.
    """
