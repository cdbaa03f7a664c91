"""Registers the `imagefolder` dataset. Imports nothing heavy: the class loads on use."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("imagefolder", "lmmsae_imagefolder.dataset:ImageFolder")
