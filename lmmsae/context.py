"""What a stage receives: the validated config, its run directory, the plan, and one factory for components."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from lmmsae.config import COMPONENT_SECTIONS, ComponentConfig, RunConfig
from lmmsae.errors import UserError
from lmmsae.rundir import RunDir


@dataclass
class RunContext:
    config: RunConfig
    run: RunDir
    overwrite: tuple[str, ...] = ()          # stages to remake even when current (--overwrite)
    runs: set = field(default_factory=set)   # the stages this command executes (set by plan_for)
    created: bool = False                    # this command created the run directory
    changes: list = field(default_factory=list)  # config keys a --resume changed, not yet in run.yaml
    _plan: Any = field(default=None, repr=False)
    _built: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- options and components

    def component(self, section: str, spec: ComponentConfig | None = None):
        """(Component, validated options) for a config section such as "sae" or a scorer spec."""
        from lmmsae import plugins

        spec = spec or getattr(self.config, section)
        kind = COMPONENT_SECTIONS.get(section, section)
        component = plugins.get(kind, spec.name)
        return component, component.options(spec.options)

    def build(self, section: str):
        """The run's component of a config section, built once per context: "dataset" and "model"
        (the adapter on the run's device and dtype). Constructor contracts: docs/plugins.md."""
        if section not in self._built:
            if section == "dataset" and not self.config.dataset.name:
                raise self._no_dataset()
            component, options = self.component(section)
            cls = component.load()
            self._built[section] = BUILDERS[section](cls, options, self)
        return self._built[section]

    def stage_options(self, stage: str, options_cls: type):
        return self.config.stage_options(stage, options_cls)

    def log(self, event: str, **fields: Any) -> None:
        if self.run is not None:
            self.run.log(event, **fields)

    # -- the plan (lmmsae.plan)

    def plan_for(self, runs: Iterable[str], targets: Iterable[str] | None = None):
        """Plan this config against the run directory; stages ask `units()` for their part of it."""
        from lmmsae import plan

        self.runs = set(runs)
        self._plan = plan.build(self, runs, targets, self.overwrite)
        return self._plan

    @property
    def plan(self):
        return self._plan

    def units(self, stage: str):
        """The planned units of `stage` (planning it alone when no plan covers it yet)."""
        if self._plan is None or stage not in self._plan.runs:
            self.plan_for([stage])
        return self._plan.of(stage)

    def unit(self, path: str):
        return self._plan.unit(path)

    def accept(self) -> None:
        """The config is accepted (a stage checked its components and starts writing, or the command
        succeeded): a --resume's changes go into run.yaml now, never for a command that was refused."""
        if self.changes and self.run is not None:
            self.run.write_config(self.config)
            self.run.log("config-changed", changed=self.changes)
            self.changes = []

    def wants(self, unit) -> bool:
        """Whether `unit` has work to do (a current one is logged as skipped). A stage checks this,
        loads and checks its components, then calls `start`."""
        if unit.current:
            self.log("stage-skip", stage=unit.stage, path=unit.path, reason="current")
        return unit.todo

    def start(self, unit) -> bool:
        """Get `unit` ready to be made, as its status says: False when it is current (nothing to do);
        otherwise its inputs must be current, the config is accepted, a stale output is discarded,
        and its state says running. Stages call it after loading and checking their components."""
        if not self.wants(unit):
            return False
        self.accept()
        for path in (*unit.inputs,):
            self._plan.require(path, self.run.path.name)
        if unit.status in ("run", "rerun"):
            self.run.discard(unit.path)
        reads = {}
        for path in (*unit.inputs, *unit.optional):
            if path in self._plan.by_path and self.run.is_current(path, self._plan.unit(path).fingerprint):
                reads[path] = self.run.state(path).get("instance", "")
            elif path in unit.inputs:
                raise UserError(f"{path} changed while {unit.stage} was starting: run the command again")
            else:
                reads[path] = "absent"
        self.run.begin(unit, reads)
        self.log("unit-start", stage=unit.stage, path=unit.path, status=unit.status, reason=unit.reason)
        return True

    def finish(self, unit, **info: Any) -> None:
        """Record `unit` complete (after its output is fully written); later stages may now read it."""
        state = self.run.complete(unit, **info)
        unit.status, unit.reason = "current", ""
        self.log("unit-done", stage=unit.stage, path=unit.path, seconds=state["seconds"])

    def adopt(self, path: str, **info: Any) -> None:
        """Record an output written outside its stage (a test's oracle features.h5, an imported file)
        as made by this config, so later stages read it as current."""
        from lmmsae.plan import ALL_STAGES

        unit = self.plan_for(ALL_STAGES).unit(path)
        reads = {p: (self.run.state(p) or {}).get("instance", "absent") for p in (*unit.inputs, *unit.optional)}
        self.run.begin(unit, reads)
        self.run.complete(unit, **info)
        self._plan = None

    # -- validation before any work

    def validate(self, stages: Iterable[str] = ()) -> None:
        """Check every component's and stage's options up front, so a typo fails before hours of work,
        and run the preflight of the components the `stages` to run use."""
        from lmmsae import plugins
        from lmmsae.config import STAGES
        from lmmsae.plan import stage_module

        stages = list(stages)
        present = [s for s in COMPONENT_SECTIONS if getattr(self.config, s).name]
        for section in present:  # names first: a typo must not wait for torch to import
            plugins.get(COMPONENT_SECTIONS[section], getattr(self.config, section).name)
        for spec in self.config.scorers:
            plugins.get("scorers", spec.name)
        self.preflight(stages)
        for stage in stages:  # a stage's options against what is known before any work
            getattr(stage_module(stage), "check", lambda _ctx: None)(self)
        for section in present:
            self.component(section)
        for spec in self.config.scorers:
            self.component("scorers", spec)
        if not self.config.dataset.name and any("dataset" in STAGE_SECTIONS.get(s, ()) for s in stages):
            raise self._no_dataset()
        for stage in STAGES:
            self.stage_options(stage, stage_module(stage).Options)

    def _no_dataset(self) -> UserError:
        """A real model's run names no dataset (its registration declares none: the toy shapes do not fit)."""
        return UserError(f"model {self.config.model.name!r} needs a dataset of real images (the toy shapes fit only "
                         f"the toy model): pass --dataset imagefolder -o dataset.root=DIR, or --dataset hf "
                         f"-o dataset.path=NAME")

    def preflight(self, stages: list[str]) -> None:
        """Each component the stages use checks what it needs (an API key, a checkpoint, a folder), so a
        missing key fails in a second, not after hours of earlier stages; explainers first (cheapest)."""
        from lmmsae.registry import SINGULAR

        sections = {s for stage in stages for s in STAGE_SECTIONS.get(stage, ())}
        specs = [("explainers", e) for e in self._compare_explainers()] if "compare" in stages else []
        specs += [(s, getattr(self.config, s)) for s in ("explainer", "dataset", "model", "sae")
                  if s in sections and getattr(self.config, s).name]  # a missing dataset is named in validate
        specs += [("scorers", s) for s in self.config.scorers if "scorers" in sections]
        dataset = self.component("dataset")[0].load() if self.config.dataset.name else None
        for section, spec in specs:
            component, options = self.component(section, spec)
            context = {"dataset": dataset} if section == "scorers" else {}
            try:
                getattr(component.load(), "preflight", lambda _options, **_: None)(options, **context)
            except UserError as exc:
                raise UserError(f"{SINGULAR[component.kind]} {spec.name!r}: {exc}") from None

    def _compare_explainers(self) -> list[ComponentConfig]:
        from lmmsae.stages.compare import Options, entrants

        return [ComponentConfig(e.name, e.options) for e in entrants(self.stage_options("compare", Options).explainers)]


def _model(cls, options, ctx: RunContext):
    return cls(options, device=ctx.config.device, dtype=ctx.config.dtype)


def _dataset(cls, options, ctx: RunContext):
    return cls(options)


BUILDERS = {"model": _model, "dataset": _dataset}


# The component sections each stage uses: preflight checks only what will run (a report needs no key).
STAGE_SECTIONS = {"collect": ("dataset", "model"), "train": ("dataset", "model", "sae"),
                  "cache": ("dataset", "model", "sae"), "explain": ("explainer",), "score": ("dataset", "scorers"),
                  "steer": ("dataset", "model", "sae"), "compare": ("scorers",)}
