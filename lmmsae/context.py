"""What a stage receives: the validated config, its run directory, and component loading."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmmsae.config import COMPONENT_SECTIONS, ComponentConfig, RunConfig
from lmmsae.rundir import RunDir


@dataclass
class RunContext:
    config: RunConfig
    run: RunDir

    def component(self, section: str, spec: ComponentConfig | None = None):
        """(Component, validated options) for a config section such as "sae" or a scorer spec."""
        from lmmsae import plugins

        spec = spec or getattr(self.config, section)
        kind = COMPONENT_SECTIONS.get(section, section)
        component = plugins.get(kind, spec.name)
        return component, component.options(spec.options)

    def stage_options(self, stage: str, options_cls: type):
        return self.config.stage_options(stage, options_cls)

    def log(self, event: str, **fields: Any) -> None:
        self.run.log(event, **fields)

    def validate(self) -> None:
        """Check every component's and stage's options up front, so a typo fails before hours of work."""
        import importlib

        from lmmsae import plugins
        from lmmsae.config import STAGES

        for section in COMPONENT_SECTIONS:  # names first: a typo must not wait for torch to import
            plugins.get(COMPONENT_SECTIONS[section], getattr(self.config, section).name)
        for spec in self.config.scorers:
            plugins.get("scorers", spec.name)
        for section in COMPONENT_SECTIONS:
            self.component(section)
        for spec in self.config.scorers:
            self.component("scorers", spec)
        for stage in STAGES:
            try:
                module = importlib.import_module(f"lmmsae.stages.{stage}")
            except ModuleNotFoundError as exc:
                if exc.name != f"lmmsae.stages.{stage}":
                    raise
                continue
            self.stage_options(stage, module.Options)
