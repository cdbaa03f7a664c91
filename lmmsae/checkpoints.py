"""Is a model checkpoint usable here? Cheap answers (no download, no torch) for components' preflight.

A checkpoint is "toy" (the shipped toy LLaVA), a local folder, or a Hugging Face hub id. A hub id
that is not in the local Hugging Face cache is fine online (it will be downloaded) and an error
offline, where it could only fail later, after hours of other stages (or after ~30 s of the hub
client's retries). Offline means HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set, or the hub's host
(HF_ENDPOINT) does not answer a quick local check: a DNS lookup and a TCP connect, each bounded by
`TIMEOUT_S`, done once per process.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from lmmsae.errors import UserError

TIMEOUT_S = 1.5
_reachable: dict[str, bool] = {}


def offline_by_env() -> bool:
    """True when Hugging Face downloads are switched off by the environment."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no", "off")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable() -> bool:
    """Whether the hub endpoint (HF_ENDPOINT, default huggingface.co) accepts a TCP connection, quickly."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    key = f"{host}:{port}"
    if key not in _reachable:
        _reachable[key] = _connects(host, port)
    return _reachable[key]


def _connects(host: str, port: int) -> bool:
    found: list = []
    lookup = threading.Thread(target=lambda: found.append(_lookup(host, port)), daemon=True)
    lookup.start()
    lookup.join(TIMEOUT_S)  # getaddrinfo has no timeout of its own
    if not found or not found[0]:
        return False
    try:
        with socket.create_connection(found[0], timeout=TIMEOUT_S):
            return True
    except OSError:
        return False


def _lookup(host: str, port: int):
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2]
    except OSError:
        return None


def offline() -> bool:
    """True when nothing can be downloaded from the hub: switched off, or the hub cannot be reached."""
    return offline_by_env() or not hub_reachable()


def looks_local(name: str) -> bool:
    """A path, not a hub id ("org/name"): absolute, relative with ./ or ../, ~, or with more than one /."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def in_hf_cache(repo_id: str, filenames: tuple[str, ...] = ("config.json",), repo_type: str = "model") -> bool:
    """Whether any of `filenames` of the hub repo is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(repo_id, f, repo_type=repo_type), str) for f in filenames)
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        return False


def check_checkpoint(checkpoint: str, option: str, filenames: tuple[str, ...] = ("config.json",),
                     flag: str | None = None, alternative: str = "") -> bool:
    """UserError (one line) when `checkpoint` cannot be loaded here; `option` is where the user sets it
    (`flag` overrides how the message spells it, `alternative` adds another way out). Returns True
    when it must be loaded from local files only (a cached hub id while offline)."""
    flag = flag or f"-o {option}=PATH"
    if checkpoint == "toy":
        from lmmsae import toyworld

        if not (Path(toyworld.LLAVA_DIR) / "config.json").is_file():
            raise UserError(f"the toy LLaVA weights are missing from {toyworld.LLAVA_DIR}: reinstall lmmsae")
        return False
    if Path(checkpoint).expanduser().exists():
        return False
    if looks_local(checkpoint):
        raise UserError(f"checkpoint folder {checkpoint!r} does not exist: fix {flag}")
    cached = in_hf_cache(checkpoint, filenames)
    if not offline():
        return False
    if cached:
        return True
    why = "downloads are off (HF_HUB_OFFLINE)" if offline_by_env() else "the Hugging Face hub cannot be reached"
    raise UserError(f"checkpoint {checkpoint!r} is not a local folder and not in the Hugging Face cache, and {why}: "
                    f"it is not available offline; download it where there is network (`hf download {checkpoint}`) "
                    f"or pass a local folder with {flag}{', or ' + alternative if alternative else ''}")
