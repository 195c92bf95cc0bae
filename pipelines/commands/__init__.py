"""Subcommands of ``mailpulse`` (discovered by :mod:`pipelines.cli`)."""
