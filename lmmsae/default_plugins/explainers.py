"""Built-in explainers."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_explainers(register):
    pass
