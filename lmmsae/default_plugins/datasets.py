"""Built-in datasets."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    pass
