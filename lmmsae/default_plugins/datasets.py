"""Built-in datasets."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("shapes", "lmmsae.datasets.shapes:ShapesDataset")
    register("hf", "lmmsae.datasets.hf:HFDataset")
