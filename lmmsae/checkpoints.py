"""Is a model checkpoint usable here? Cheap answers (no download, no torch) for components' preflight.

A checkpoint is "toy" (the shipped toy LLaVA), a local folder, or a Hugging Face hub id. A hub id
that is not in the local Hugging Face cache is fine online (it will be downloaded) and an error
offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set), where it could only fail later, after
hours of other stages.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmmsae.errors import UserError


def offline() -> bool:
    """True when Hugging Face downloads are switched off by the environment."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_local(name: str) -> bool:
    """A path, not a hub id ("org/name"): absolute, relative with ./ or ../, ~, or with more than one /."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def in_hf_cache(repo_id: str, filenames: tuple[str, ...] = ("config.json",), repo_type: str = "model") -> bool:
    """Whether any of `filenames` of the hub repo is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f, repo_type=repo_type), str) for f in filenames)


def check_checkpoint(checkpoint: str, option: str, filenames: tuple[str, ...] = ("config.json",)) -> None:
    """UserError (one line) when `checkpoint` cannot be loaded here; `option` is where the user sets it."""
    if checkpoint == "toy":
        from lmmsae import toyworld

        if not (Path(toyworld.LLAVA_DIR) / "config.json").is_file():
            raise UserError(f"the toy LLaVA weights are missing from {toyworld.LLAVA_DIR}: reinstall lmmsae")
        return
    if Path(checkpoint).expanduser().exists():
        return
    if looks_local(checkpoint):
        raise UserError(f"checkpoint folder {checkpoint!r} does not exist: fix -o {option}=PATH")
    if offline() and not in_hf_cache(checkpoint, filenames):
        raise UserError(f"checkpoint {checkpoint!r} is not a local folder and not in the Hugging Face cache, "
                        f"and downloads are off (HF_HUB_OFFLINE): download it where there is network "
                        f"(`hf download {checkpoint}`) or pass a local folder with -o {option}=PATH")
