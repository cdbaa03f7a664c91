"""Built-in scorers."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_scorers(register):
    pass
