"""The hooks a plugin may implement. Each receives a `register` callback; long docs live in docs/plugins.md."""

import pluggy

hookspec = pluggy.HookspecMarker("lmmsae")
hookimpl = pluggy.HookimplMarker("lmmsae")


@hookspec
def register_models(register):
    """Register model adapters: register(name, "module:Class", **defaults)."""


@hookspec
def register_saes(register):
    """Register SAE architectures: register(name, "module:Class")."""


@hookspec
def register_datasets(register):
    """Register datasets: register(name, "module:Class", **defaults)."""


@hookspec
def register_backends(register):
    """Register model backends (local LMMs, APIs) that explainers and judges ask: register(name, "module:Class", **defaults)."""


@hookspec
def register_explainers(register):
    """Register explainers (prompting strategies over a backend): register(name, "module:Class", **defaults)."""


@hookspec
def register_scorers(register):
    """Register scorers: register(name, "module:Class", **defaults)."""


@hookspec
def register_commands(cli):
    """Add click commands to the `lmmsae` command group."""
