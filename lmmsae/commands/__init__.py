"""CLI commands, each in its own module, imported only when invoked."""
