"""``diffkit new-plugin NAME``: scaffold a separately installable modality plugin ``diffkit-NAME``.

Templates live in ``diffkit/templates/plugin/`` as ``*.tmpl`` files (so that setuptools never takes
them for modules). Generation copies the tree, drops the ``.tmpl`` suffix, replaces ``__module__`` and
``__name__`` in paths and ``{{name}}``, ``{{module}}``, ``{{dist}}``, ``{{Class}}`` and
``{{diffkit_version}}`` in file contents. Nothing else is interpreted: the templates run no code.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
TEMPLATE_PACKAGE = "diffkit"
TEMPLATE_DIR = ("templates", "plugin")


def placeholders(name: str) -> dict[str, str]:
    """What each placeholder becomes for plugin ``name`` (e.g. ``point-cloud``)."""
    from diffkit import __version__

    module = "diffkit_" + name.replace("-", "_")
    return {
        "name": name,
        "module": module,
        "dist": f"diffkit-{name}",
        "Class": "".join(part.capitalize() for part in name.split("-")) + "Space",
        "diffkit_version": __version__,
    }


def render(text: str, values: dict[str, str]) -> str:
    """Replace every ``{{key}}``; an unknown placeholder is an error, not silently kept."""
    def sub(match):
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} is unknown; use one of {sorted(values)}")
        return values[key]

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def template_files():
    """``(relative path, text)`` of every template file."""
    root = resources.files(TEMPLATE_PACKAGE).joinpath(*TEMPLATE_DIR)
    out = []

    def walk(node, rel: tuple[str, ...]):
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name == "__pycache__":
                continue
            if child.is_dir():
                walk(child, rel + (child.name,))
            elif child.name.endswith(".tmpl"):
                out.append(("/".join(rel + (child.name,)), child.read_text()))

    if not root.is_dir():
        raise FileNotFoundError(f"diffkit's plugin templates are missing ({root}); reinstall diffkit (pip install -e .)")
    walk(root, ())
    return out


def new_plugin(name: str, dir: str | Path = ".") -> Path:
    """Write the distribution ``diffkit-NAME`` under ``dir`` and return its path.

    It holds ``setup.cfg`` (entry points), ``pyproject.toml``, ``README.md``, the package
    ``diffkit_NAME/`` (space, dataset, backbone, metric, recipes ``NAME`` and ``NAME-smoke``) and
    ``tests/`` that run the conformance kit. It passes its own tests unchanged once installed.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"plugin name {name!r} is not valid; use lower-case letters, digits and single hyphens, starting with a letter (e.g. point-cloud)")
    if name.startswith("diffkit"):
        raise ValueError(f"plugin name {name!r} already starts with 'diffkit'; give the bare modality name (diffkit-{name} would be doubled)")
    values = placeholders(name)
    target = Path(dir).expanduser().resolve() / values["dist"]
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} already exists and is not empty; choose another --dir or remove it")
    files = [(rel, render(text, values)) for rel, text in template_files()]
    for rel, text in files:
        rel = rel[: -len(".tmpl")].replace("__module__", values["module"]).replace("__name__", values["name"])
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target


__all__ = ["NAME_RE", "new_plugin", "placeholders", "render", "template_files"]
