"""Name -> class registries (PyG ``resolver`` pattern): one for model families, one for tasks.

A class registers under its ``name`` with the registry's decorator; an unknown name raises
ConfigError listing the choices.
"""

from __future__ import annotations

from pionml.errors import ConfigError


class Registry(dict):
    """A dict of name -> class with a registering decorator and a lookup that lists choices."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls):
        """Class decorator: add ``cls`` under ``cls.name`` (empty or repeated names refused)."""
        if not getattr(cls, "name", "") or cls.name in self:
            raise ConfigError(f"{self.kind} class {cls.__name__}: name "
                              f"{getattr(cls, 'name', '')!r} "
                              "empty or registered twice")
        self[cls.name] = cls
        return cls

    def lookup(self, name: str):
        """The class registered as ``name``; an unknown name: a ConfigError with the choices."""
        try:
            return self[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} '{name}' (choices: "
                              f"{', '.join(sorted(self))})") from None
