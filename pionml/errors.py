"""Exceptions raised by pionml.

Every error about bad input names what is wrong and where (file, tree, branch, entry, ...).
They subclass :class:`ValueError` so that callers who do not know pionml can still catch them.
"""

from __future__ import annotations


class PionmlError(ValueError):
    """Base class of every pionml error about bad input or bad configuration."""


class SchemaError(PionmlError):
    """A file lacks a tree or branch, or a branch has the wrong type."""


class DataError(PionmlError):
    """A value in a file is invalid: NaN/inf energy, length mismatch, unknown cell ID, ..."""


class ConfigError(PionmlError):
    """An unknown name or an invalid option (model name, task, species, ...)."""


class UsageError(ConfigError):
    """A bad command-line argument found after parsing (it needs the data or the registries):
    the command line reports it as argparse does, one line and exit 2."""


class CheckpointError(PionmlError):
    """A trained-model folder is missing files, corrupt, or does not match the model."""


def where(file=None, tree=None, branch=None, entry=None, **more) -> str:
    """Format a location as ``file 'f', tree 't', branch 'b', entry 12``."""
    parts = []
    if file is not None:
        parts.append(f"file '{file}'")
    if tree is not None:
        parts.append(f"tree '{tree}'")
    if branch is not None:
        parts.append(f"branch '{branch}'")
    if entry is not None:
        parts.append(f"entry {entry}")
    parts.extend(f"{k} {v}" for k, v in more.items() if v is not None)
    return ", ".join(parts)


class OutputError(PionmlError):
    """An output path that cannot be written: a directory, an unwritable folder, an input."""
