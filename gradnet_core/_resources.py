"""Where the package's bundled data lives: ``gradnet_core/data/``, shipped as package data.

Found through ``importlib.resources``, so the bundled digits and colour images come with every
install of the package (editable or not), whatever the working directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["data_path"]


def data_path(name: str) -> Path:
    """The bundled data folder or file ``gradnet_core/data/<name>`` (e.g. ``"digits"``) as a path on disk."""
    resource = files(__package__).joinpath("data").joinpath(name)
    if not isinstance(resource, Path):
        # A zipped install (zipimport) has no folders to list; pip always installs files on disk.
        raise RuntimeError(f"gradnet_core's bundled data must be files on disk; found {resource!r}")
    return resource
