"""The stage contract and the planner.

Every stage declares, for a config, the **units** it would write: an artifact path in the run, the
options that determine it, the run artifacts it reads (other units), the external files it reads,
and, for stages that can grow their output record by record, an **extent** (how many records:
explain's n_features, steer's features). The planner computes each unit's fingerprint from the
config alone (a Merkle chain: own options + inputs' fingerprints), compares it with the state
recorded beside the artifact (`RunDir.state`), and gives every unit a status:

    current   complete, same fingerprint, inputs unchanged since it read them: skipped
    run       never made (or left without a state record: discarded and made again)
    resume    interrupted with the same fingerprint, or complete with records that failed for a
              reason worth trying again (a request error): continues
    extend    complete, same records fingerprint, only the extent changed: adds records
    rerun     options or inputs changed (or --overwrite): discarded and made again
    skipped   not needed by what this command asked for

`lmmsae run --dry-run` prints the plan; stages ask the plan for their units.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from lmmsae.errors import UserError
from lmmsae.fingerprint import digest

RUNS = ("run", "resume", "extend", "rerun")  # statuses that do work
ALL_STAGES = ("collect", "train", "cache", "explain", "score", "steer", "compare", "report")  # inputs first


@dataclass
class Unit:
    """One artifact a stage writes, and what it is made from."""

    stage: str
    path: str                                   # relative to the run directory
    options: dict[str, Any]                     # what determines every record of it
    inputs: tuple[str, ...] = ()                # run artifacts it reads (paths of other units)
    optional: tuple[str, ...] = ()              # run artifacts it reads when they exist (the report)
    external: dict[str, str] = field(default_factory=dict)  # name -> fingerprint of a file outside the run
    extent: dict[str, Any] = field(default_factory=dict)    # how many records: a change extends
    extensible: bool = False
    # set by the planner
    records: str = ""                           # fingerprint without the extent
    fingerprint: str = ""
    status: str = ""
    reason: str = ""
    needed: bool = True
    pending: str = ""                           # what a skipped unit would need (e.g. "rerun: changed: ...")
    made_from: dict[str, str] = field(default_factory=dict)  # input path -> its fingerprint

    @property
    def current(self) -> bool:
        return self.status == "current"

    @property
    def todo(self) -> bool:
        return self.status in RUNS

    def status_reason(self) -> tuple[str, str]:
        return self.status, self.reason


class Plan:
    """Units of every stage for one config and run directory, in pipeline order, with statuses."""

    def __init__(self, units: list[Unit], runs: Iterable[str] = ()):
        self.units = units
        self.runs = set(runs)
        self.run_name = ""
        self.by_path = {u.path: u for u in units}

    def unit(self, path: str) -> Unit:
        try:
            return self.by_path[path]
        except KeyError:
            raise UserError(f"nothing in this run's config writes {path!r}") from None

    def of(self, stage: str) -> list[Unit]:
        return [u for u in self.units if u.stage == stage]

    def require(self, path: str, run_name: str) -> None:
        """A unit about to read `path` needs it current (made by this config, unchanged since)."""
        unit = self.unit(path)
        if unit.current:
            return
        pending = unit.pending or unit.status
        state = "missing" if pending == "run" else f"not current ({pending})"
        raise UserError(f"{path} is {state}: run `lmmsae {unit.stage} --resume --name {run_name}` first "
                        f"(or `lmmsae run --resume --name {run_name}`)")

    def check_inputs(self) -> None:
        """Before any work: every input of a unit to be made, from a stage this command does not run,
        must be current (else one line naming the command that makes it)."""
        for unit in self.units:
            if unit.todo:
                for path in unit.inputs:
                    if self.by_path[path].stage not in self.runs:
                        self.require(path, self.run_name)

    def rows(self, stages: Iterable[str] | None = None) -> list[tuple[str, str, str, str]]:
        """(stage, artifact, status, reason) for printing."""
        keep = set(stages) if stages is not None else None
        return [(u.stage, u.path, u.status, u.reason) for u in self.units if keep is None or u.stage in keep]


def stage_module(stage: str):
    return importlib.import_module(f"lmmsae.stages.{stage}")


def build(ctx, runs: Iterable[str], targets: Iterable[str] | None = None, overwrite: Iterable[str] = ()) -> Plan:
    """Plan every stage's units for `ctx`. `runs`: the stages this command may execute; `targets`: the
    stages whose units are wanted (default: `runs`). A unit of a `runs` stage that no target reads
    is skipped; units of other stages are only read, and must be current when read."""
    runs = set(runs)
    units: list[Unit] = []
    for stage in ALL_STAGES:
        units += stage_module(stage).units(ctx)
    plan = Plan(units, runs)
    plan.run_name = ctx.run.path.name if ctx.run is not None else ""
    for unit in units:
        for path in unit.inputs:
            if path not in plan.by_path:
                raise UserError(f"{unit.stage} reads {path!r}, which no stage of this config writes")
    _fingerprints(plan)
    _needed(plan, set(runs if targets is None else targets), runs)
    _statuses(plan, ctx.run, set(overwrite))
    return plan


def _fingerprints(plan: Plan) -> None:
    for unit in plan.units:  # stages come in pipeline order: inputs are fingerprinted first
        inputs = {p: plan.by_path[p].fingerprint for p in unit.inputs}
        optional = {p: plan.by_path[p].fingerprint for p in unit.optional if p in plan.by_path}
        unit.made_from = {**inputs, **optional}
        unit.records = digest({"stage": unit.stage, "options": unit.options, "inputs": inputs,
                               "optional": optional, "external": unit.external})
        unit.fingerprint = digest({"records": unit.records, "extent": unit.extent})


def _needed(plan: Plan, targets: set[str], runs: set[str]) -> None:
    needed: set[str] = set()
    stack = [u.path for u in plan.units if u.stage in targets and u.stage in runs]
    while stack:
        path = stack.pop()
        if path in needed or plan.by_path[path].stage not in runs:
            continue
        needed.add(path)
        stack.extend(plan.by_path[path].inputs)
    for unit in plan.units:
        unit.needed = unit.path in needed


def _statuses(plan: Plan, run, overwrite: set[str]) -> None:
    for unit in plan.units:
        state = run.state(unit.path) if run is not None else None
        unit.status, unit.reason = _status(unit, state, plan, run, unit.stage in overwrite)
        if not unit.needed and unit.todo:
            unit.pending = f"{unit.status}: {unit.reason}" if unit.reason else unit.status
            unit.status, unit.reason = "skipped", "not needed by this command"


def _instance(unit: Unit, run) -> str:
    """What a reader of `unit` will have read: its current instance, or "new" when it is made first."""
    if unit.todo and unit.needed:
        return "new"
    if run is not None and run.is_current(unit.path, unit.fingerprint):
        return run.state(unit.path).get("instance", "")
    return "absent"


def _status(unit: Unit, state: dict | None, plan: Plan, run, forced: bool) -> tuple[str, str]:
    changing = [p for p in unit.inputs if plan.by_path[p].todo and plan.by_path[p].needed]
    if forced:
        return ("rerun" if state else "run"), "--overwrite"
    if state is None:
        exists = run is not None and run.file(unit.path).exists()
        return "run", ("no state record: the partial output is discarded" if exists else "")
    if changing:
        return "rerun", f"{' and '.join(changing)} will change"
    moved = [p for p in unit.inputs if state.get("inputs", {}).get(p) != _instance(plan.by_path[p], run)]
    moved += [p for p in unit.optional if p in plan.by_path
              and state.get("inputs", {}).get(p, "absent") != _instance(plan.by_path[p], run)]
    same_records = state.get("records") == unit.records
    if state.get("status") == "complete":
        if moved:
            return "rerun", f"{' and '.join(moved)} changed since it was read"
        if state.get("fingerprint") == unit.fingerprint:
            retry = int((state.get("info") or {}).get("retry") or 0)
            return ("resume", f"{retry} failed record(s) are tried again") if retry else ("current", "")
        if same_records and unit.extensible:
            return "extend", f"changed: {_keys({unit.stage: state.get('extent')}, {unit.stage: unit.extent})}"
        return "rerun", f"changed: {_changes(state, unit)}"
    if same_records and not moved:
        return "resume", "interrupted"
    if moved:
        return "rerun", f"interrupted, and {' and '.join(moved)} changed since"
    return "rerun", f"interrupted, and changed: {_changes(state, unit)}"


def _changes(state: dict, unit: Unit) -> str:
    """What differs between the state's making and the plan: own options, external files, or what it read."""
    keys = diff(state.get("options") if isinstance(state.get("options"), dict) else {}, unit.options or {})
    keys += [f"{name} (on disk)" for name in sorted(set(state.get("external") or {}) | set(unit.external))
             if (state.get("external") or {}).get(name) != unit.external.get(name)]
    made = state.get("made_from") or {}
    keys += [f"{path} (what it reads)" for path in sorted(set(made) | set(unit.made_from))
             if made.get(path) != unit.made_from.get(path)]
    return _keys_text(keys)


def _keys(old: Any, new: Any) -> str:
    return _keys_text(diff(old if isinstance(old, dict) else {}, new or {}))


def _keys_text(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "") if keys else "its inputs"


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{key}.")
        elif digest(va) != digest(vb):
            out.append(f"{prefix}{key}")
    return out


def print_plan(plan: Plan, stages: Iterable[str] | None = None, stream=None) -> None:
    """The plan as a table: what runs, what is current, what is skipped and why."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title="plan", show_lines=False)
    for column in ("stage", "artifact", "status", "why"):
        table.add_column(column, overflow="fold")
    for stage, path, status, reason in plan.rows(stages):
        table.add_row(stage, path, status, reason)
    Console(file=stream or sys.stdout, width=None if (stream or sys.stdout).isatty() else 120).print(table)
