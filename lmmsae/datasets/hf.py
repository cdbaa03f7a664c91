"""A Hugging Face `datasets` dataset as samples: a hub name, or a folder written by `save_to_disk`.

Rows are read in the dataset's own order, so runs resume by index and shards split by index.
`datasets` is imported only when this dataset is used (`pip install 'lmmsae[hf]'`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmmsae.datasets.base import Dataset, Sample
from lmmsae.errors import UserError


class HFDataset(Dataset):
    @dataclass
    class Options:
        path: str                         # hub name (e.g. "lmms-lab/COCO-Caption") or a save_to_disk folder
        split: str = "train"
        config: str | None = None         # the hub dataset's configuration name, if it has several
        image_column: str = "image"
        prompt: str = ""                  # the prompt of every sample, unless prompt_column is set
        prompt_column: str | None = None
        id_column: str | None = None      # default: "<split>-<row index>"
        caption_column: str | None = None  # kept as ground truth (truth["caption"])
        limit: int | None = None

    @classmethod
    def preflight(cls, options) -> None:
        import importlib.util

        from lmmsae.checkpoints import looks_local

        if importlib.util.find_spec("datasets") is None:
            raise UserError("needs the datasets package: pip install 'lmmsae[hf]'")
        if looks_local(options.path) and not Path(options.path).expanduser().is_dir():
            raise UserError(f"folder {options.path!r} does not exist: set -o dataset.path=<save_to_disk folder or hub name>")

    def __init__(self, options: "HFDataset.Options"):
        super().__init__(options)
        try:
            import datasets
        except ModuleNotFoundError:
            raise UserError("dataset 'hf' needs the datasets package: pip install 'lmmsae[hf]'") from None
        self.rows = _load(datasets, options)
        columns = set(self.rows.column_names)
        for what, column in (("image_column", options.image_column), ("prompt_column", options.prompt_column),
                             ("id_column", options.id_column), ("caption_column", options.caption_column)):
            if column is not None and column not in columns:
                raise UserError(f"dataset 'hf' {options.path!r} has no column {column!r} ({what}); "
                                f"columns: {', '.join(sorted(columns))}")
        self.n = len(self.rows) if options.limit is None else min(options.limit, len(self.rows))

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> Sample:
        o = self.options
        row: dict[str, Any] = self.rows[index]
        sample_id = str(row[o.id_column]) if o.id_column else f"{o.split}-{index}"
        image = row[o.image_column]
        if image is None or not hasattr(image, "convert"):
            raise UserError(f"row {sample_id!r}: column {o.image_column!r} holds no image "
                            f"(cast it with datasets.Image(), or choose -o dataset.image_column)")
        prompt = str(row[o.prompt_column]) if o.prompt_column else o.prompt
        truth = {"caption": row[o.caption_column]} if o.caption_column else None
        return Sample(sample_id, image.convert("RGB"), prompt, truth)


def _load(datasets, o: HFDataset.Options):
    local = Path(o.path).expanduser()
    try:
        if local.is_dir():
            data = datasets.load_from_disk(str(local))
            if isinstance(data, datasets.DatasetDict):
                if o.split not in data:
                    raise UserError(f"{o.path!r} has no split {o.split!r}; splits: {', '.join(data)}")
                data = data[o.split]
            return data
        return datasets.load_dataset(o.path, o.config, split=o.split)
    except UserError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"dataset 'hf' cannot load {o.path!r} (split {o.split!r}): {first}") from None
