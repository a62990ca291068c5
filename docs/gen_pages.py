"""Write the API reference pages when ``mkdocs build`` runs (mkdocs-gen-files, see mkdocs.yml).

One page per module of ``rnnkit/cells`` (cell families), ``rnnkit/strategies`` (strategies) and
``rnnkit/train/tasks`` (tasks), each a ``::: rnnkit.PACKAGE.MODULE`` block that mkdocstrings
fills from the module's docstrings; the package's own docstring opens each section. A module
added to one of these folders gets its page on the next build, so the pages cannot fall behind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent

# (folder under rnnkit/, section folder of the site, section title)
SECTIONS = (
    ("cells", "cells", "Cells"),
    ("strategies", "strategies", "Strategies"),
    ("train/tasks", "tasks", "Tasks"),
)


def summary(path: Path) -> str:
    """The first line of a module's docstring, or an empty string."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    return docstring.splitlines()[0] if docstring else ""


def write_page(page: str, title: str, module: str, source: Path, extra: str = "") -> None:
    """A page titled ``title`` holding ``::: module``; ``extra`` markdown follows it."""
    with mkdocs_gen_files.open(page, "w") as handle:
        handle.write(f"# {title}\n\n::: {module}\n")
        if extra:
            handle.write("    options:\n      members: false\n\n" + extra)
    mkdocs_gen_files.set_edit_path(page, source.relative_to(ROOT))


def write_section(folder: str, section: str, title: str) -> None:
    """The section's index (the package docstring, a list of its modules) and a page per module."""
    package = "rnnkit." + folder.replace("/", ".")
    directory = ROOT / "rnnkit" / folder
    modules = [path for path in sorted(directory.glob("*.py")) if path.stem != "__init__"]
    listing = "".join(f"- [`{path.stem}`]({path.stem}.md): {summary(path)}\n" for path in modules)
    write_page(f"{section}/index.md", title, package, directory / "__init__.py", listing)
    for path in modules:
        write_page(f"{section}/{path.stem}.md", path.stem, f"{package}.{path.stem}", path)


for folder, section, title in SECTIONS:
    write_section(folder, section, title)
