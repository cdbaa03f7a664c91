"""The run config: defaults < YAML file (--config) < flags < `-o section.key=value`, validated once.

Component sections (`model`, `dataset`, `sae`, `explainer`, each of `scorers`) are mappings with a
`name` and that component's options side by side. Stage sections (`collect`, `train`, ...) hold
the options of that stage. When a layer changes a component's name, options set for the previous
component by lower layers are dropped: they belonged to something else.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmmsae.errors import UserError, did_you_mean

COMPONENT_SECTIONS = {"model": "models", "dataset": "datasets", "sae": "saes", "explainer": "explainers"}
LIST_SECTIONS = {"scorers": "scorers"}
STAGES = ("collect", "train", "cache", "explain", "score", "report", "steer", "compare")
TOP_LEVEL = ("name", "out", "seed", "device", "dtype", "hookpoints", "on_bad_sample")
DTYPES = ("float32", "float16", "bfloat16")

DEFAULTS: dict[str, Any] = {
    "name": None,
    "out": "runs",
    "seed": 0,
    "device": "cpu",
    "dtype": "float32",
    "hookpoints": ["layers.2"],
    "on_bad_sample": "skip",
    "dataset": {"name": "shapes"},
    "model": {"name": "toy-llava"},
    "sae": {"name": "topk", "n_latents": 512, "k": 16},  # toy-sized (docs/toyworld.md)
    "explainer": {"name": "toy-llava"},
    "scorers": [{"name": "clip"}, {"name": "iou"}],
    **{stage: {} for stage in STAGES},
    "explain": {"min_active_share": 0.1},  # skip features lit on under a tenth of their top images
}


@dataclass
class ComponentConfig:
    """A component chosen by name, with its options (validated by the component's Options)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass
class RunConfig:
    """Everything a run depends on. `to_dict()` is what run.yaml holds, and feeds back via --config."""

    name: str | None
    out: str
    seed: int
    device: str
    dtype: str
    hookpoints: list[str]
    on_bad_sample: str
    dataset: ComponentConfig
    model: ComponentConfig
    sae: ComponentConfig
    explainer: ComponentConfig
    scorers: list[ComponentConfig]
    stages: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in TOP_LEVEL}
        out["hookpoints"] = list(self.hookpoints)
        for section in COMPONENT_SECTIONS:
            out[section] = getattr(self, section).to_dict()
        out["scorers"] = [s.to_dict() for s in self.scorers]
        for stage in STAGES:
            out[stage] = dict(self.stages.get(stage, {}))
        return out

    def stage_options(self, stage: str, options_cls: type):
        """The validated options of one stage."""
        from lmmsae.options import parse_options

        return parse_options(options_cls, self.stages.get(stage, {}), where=stage)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; a missing or malformed file is a UserError naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"config file {str(path)!r} is not UTF-8 text: give a YAML file") from None
    except IsADirectoryError:
        raise UserError(f"config file {str(path)!r} is a folder: give a YAML file") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise UserError(f"config file {str(path)!r} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` with the value read as YAML (numbers, booleans, lists)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} must look like section.key=value, e.g. -o sae.k=32")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def resolve(
    base: dict[str, Any] | None = None,
    file: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[tuple[str, Any]] = (),
) -> RunConfig:
    """Merge the layers in precedence order and validate the result."""
    data = copy.deepcopy(DEFAULTS if base is None else base)
    if base is None:
        _apply_model_defaults(data, _chosen_model(file, flags, overrides))
    if file:
        _merge_layer(data, file, "config file")
    if flags:
        _merge_layer(data, {k: v for k, v in flags.items() if v is not None and v != ()}, "flags")
    for path, value in overrides:
        _set_path(data, path, value)
    return validate(data)


def _chosen_model(file, flags, overrides) -> str:
    """The model name the layers will end with (the last layer that names one wins)."""
    name = DEFAULTS["model"]["name"]
    for layer in (file or {}, flags or {}):
        value = layer.get("model")
        name = value if isinstance(value, str) else (value or {}).get("name", name) if isinstance(value, dict) else name
    for path, value in overrides:
        if path == "model.name" or (path == "model" and isinstance(value, str)):
            name = value
        elif path == "model" and isinstance(value, dict):
            name = value.get("name", name)
    return name


def _apply_model_defaults(data: dict[str, Any], model: str) -> None:
    """The chosen model's declared run defaults (`run_defaults=` at its registration: hookpoints,
    device, dtype, dataset) replace the toy world's before the user's layers apply. A dataset of None means the
    user must name one (RunContext.validate says so, after the components' own checks)."""
    from lmmsae import plugins

    try:
        declared = plugins.get("models", model).run_defaults()
    except UserError:
        return  # an unknown model: validation names it
    for key, value in declared.items():
        data[key] = {} if value is None else copy.deepcopy(value)


def _merge_layer(data: dict[str, Any], layer: dict[str, Any], where: str) -> None:
    for key, value in layer.items():
        _check_top_key(key, where)
        if key in COMPONENT_SECTIONS:
            value = {"name": value} if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise UserError(f"{key} in {where} must be a name or a mapping with a name")
            if "name" in value and value["name"] != data[key].get("name"):
                data[key] = {}
            data[key].update(value)
        elif key in LIST_SECTIONS:
            items = value if isinstance(value, list) else [value]
            data[key] = [{"name": v} if isinstance(v, str) else dict(v) for v in items]
        elif key in STAGES:
            if not isinstance(value, dict):
                raise UserError(f"{key} in {where} must be a mapping of {key} options")
            data[key].update(value)
        else:
            data[key] = list(value) if key == "hookpoints" and isinstance(value, (list, tuple)) else value


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    _check_top_key(parts[0], f"override {path!r}")
    if len(parts) == 1:
        _merge_layer(data, {parts[0]: value}, f"override {path!r}")
        return
    node: Any = data[parts[0]]
    if parts[0] in COMPONENT_SECTIONS and parts[1] == "name" and value != node.get("name"):
        data[parts[0]] = node = {}
    for i, part in enumerate(parts[1:-1], start=1):
        node = _child(node, part, path)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, path)] = value
    else:
        node[last] = value


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    return node.setdefault(part, {})


def _index(node: list, part: str, path: str) -> int:
    try:
        i = int(part)
        node[i]
        return i
    except (ValueError, IndexError):
        raise UserError(f"override {path!r}: {part!r} is not an index of a list of {len(node)}") from None


def _check_top_key(key: str, where: str) -> None:
    valid = (*TOP_LEVEL, *COMPONENT_SECTIONS, *LIST_SECTIONS, *STAGES)
    if key not in valid:
        raise UserError(f"unknown config section {key!r} in {where}.{did_you_mean(key, valid)} "
                        f"Valid: {', '.join(valid)}")


def validate(data: dict[str, Any]) -> RunConfig:
    """Check types of the top level; component and stage options are checked by their owners."""
    from lmmsae.options import parse_options

    @dataclass
    class Top:
        name: str | None = None
        out: str = "runs"
        seed: int = 0
        device: str = "cpu"
        dtype: str = "float32"
        hookpoints: list[str] = field(default_factory=list)
        on_bad_sample: str = "skip"

    from lmmsae.models.devices import resolve_device, resolve_dtype

    top = parse_options(Top, {k: data.get(k) for k in TOP_LEVEL if data.get(k) is not None}, where="config")
    check_device(top.device)
    top.device = resolve_device(top.device)  # "auto" becomes what this machine has; a missing GPU fails here
    top.dtype = resolve_dtype(top.dtype, top.device)
    if top.on_bad_sample not in ("skip", "stop"):
        raise UserError(f"on_bad_sample = {top.on_bad_sample!r}: use skip (record and go on) or stop")
    if not top.hookpoints:
        raise UserError("no hookpoint given: pass --hookpoint, e.g. --hookpoint layers.2")
    comps = {}
    for section in COMPONENT_SECTIONS:  # a missing dataset is named after the components' checks
        comps[section] = _component(data.get(section), section, required=section != "dataset")
    scorers = [_component(s, f"scorers[{i}]") for i, s in enumerate(data.get("scorers") or [])]
    return RunConfig(
        **dataclasses.asdict(top), **comps, scorers=scorers,
        stages={s: dict(data.get(s) or {}) for s in STAGES},
    )


DEVICE = re.compile(r"(auto|cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d+)?)")


def check_device(device: str) -> None:
    """Device names torch knows; anything else is a one-line error before any model loads."""
    if not DEVICE.fullmatch(str(device)):
        raise UserError(f"device {device!r} is not known: use cpu, cuda, cuda:N or auto"
                        f"{did_you_mean(str(device), ('cpu', 'cuda', 'auto'))}")


def _component(value: Any, where: str, required: bool = True) -> ComponentConfig:
    if not required and isinstance(value, dict) and not value.get("name"):
        return ComponentConfig("", dict(value))
    if not isinstance(value, dict) or not value.get("name"):
        raise UserError(f"{where} needs a name, e.g. {where}: {{name: ...}}")
    options = {k: v for k, v in value.items() if k != "name"}
    return ComponentConfig(str(value["name"]), options)


def save_yaml(config: RunConfig, path: Path) -> None:
    """Write the resolved config atomically; it reproduces the run when given back to --config."""
    import yaml

    from lmmsae.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
