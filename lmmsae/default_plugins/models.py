"""Built-in models."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_models(register):
    pass
