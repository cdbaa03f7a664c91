"""Built-in saes."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_saes(register):
    pass
