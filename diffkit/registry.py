"""Plugin discovery through ``importlib.metadata`` entry points, one group per kind of component.

Groups: ``diffkit.spaces``, ``diffkit.processes``, ``diffkit.backbones``, ``diffkit.samplers``,
``diffkit.datasets``, ``diffkit.metrics``, ``diffkit.recipes``, ``diffkit.representations`` (first stages of
two-stage generation, :mod:`diffkit.representations`). The core registers its own components
the same way (see ``setup.cfg``). Entry points are scanned once per process and kept as import strings
until a component is first used, so ``import diffkit`` imports no plugin. A component that fails to
import is reported with its error and breaks nothing else; a name claimed by two distributions is an
error naming both.
"""
from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass, field

KINDS = ("spaces", "processes", "backbones", "samplers", "datasets", "metrics", "recipes", "pretrained", "representations")
SINGULAR = {"spaces": "space", "processes": "process", "backbones": "backbone", "samplers": "sampler", "datasets": "dataset", "metrics": "metric", "recipes": "recipe",
            "pretrained": "shipped model", "representations": "representation"}

NOT_PLUGIN_EXTRAS = ("all", "dev", "bench")


class RegistryError(LookupError):
    """A component is unknown, broken or claimed twice. The message says what to do."""


@dataclass
class Component:
    kind: str
    name: str
    value: str
    distribution: str
    version: str
    status: str = "unloaded"
    error: str = ""
    claimants: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {"kind": SINGULAR[self.kind], "name": self.name, "value": self.value, "distribution": self.distribution, "version": self.version, "status": self.status}
        if self.error:
            d["error"] = self.error
        return d


_CACHE: dict | None = None
_LOADED: dict = {}
_LOCAL: dict = {}
_SHADOWED: list = []  # plugins' claims on core names, ignored and reported
CORE = "diffkit"


def _scan() -> dict:
    """Every entry point by ``(kind, name)``. The core's names win over a plugin's: a plugin registering a
    core name never disables the core component for everyone; its claim is listed apart (``_SHADOWED``) as a
    conflict. Two plugins claiming one name are a conflict that makes the name unusable until one is removed."""
    found: dict = {}
    _SHADOWED.clear()
    for kind in KINDS:
        seen = set()
        for ep in metadata.entry_points(group=f"diffkit.{kind}"):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "?"
            key = (kind, ep.name)
            if (key, dist, ep.value) in seen:
                continue  # the same distribution seen twice on sys.path
            seen.add((key, dist, ep.value))
            comp = Component(kind, ep.name, ep.value, dist, version)
            if key in found and CORE in (dist, found[key].distribution) and found[key].distribution != dist:
                core, claim = (comp, found[key]) if dist == CORE else (found[key], comp)
                claim.status = "conflict"
                claim.error = (f"{claim.distribution} also registers the core {SINGULAR[kind]} {ep.name!r}; the core's is used and this claim ignored. "
                               f"Rename it in {claim.distribution}")
                _SHADOWED.append(claim)
                found[key] = core
                continue
            if key in found and found[key].distribution != dist:
                other = found[key]
                other.claimants.append(f"{dist} {version}")
                other.status = "conflict"
                other.error = f"{SINGULAR[kind]} {ep.name!r} is claimed by both {other.distribution} and {dist}; uninstall one of them"
                continue
            found[key] = comp
    return found


def discover(refresh: bool = False) -> dict:
    """``{(kind, name): Component}`` for every entry point of every installed distribution."""
    global _CACHE
    if _CACHE is None or refresh:
        _CACHE = _scan()
        _LOADED.clear()
    return _CACHE


def register(kind: str, name: str, obj) -> None:
    """Register a component in this process only (scripts, notebooks, tests)."""
    if kind not in KINDS:
        raise RegistryError(f"unknown component kind {kind!r}; use one of {KINDS}")
    _LOCAL[(kind, name)] = obj


def unregister(kind: str, name: str) -> None:
    _LOCAL.pop((kind, name), None)


def names(kind: str) -> list[str]:
    return sorted({n for (k, n) in discover() if k == kind} | {n for (k, n) in _LOCAL if k == kind})


def provider(kind: str, name: str) -> str | None:
    """The distribution that registers component ``name`` of ``kind`` here (None for local or unknown ones).
    Runs record it beside each component, so a run moved to a machine without that plugin says what to install."""
    comp = discover().get((kind, name))
    return None if comp is None else comp.distribution


def _hint(provided_by: str | None) -> str:
    """What to install: the distribution a run recorded, or else the core's own plugin extras (the core
    knows its extras from its own metadata, never the names its plugins register)."""
    if provided_by:
        return f"; it came from the distribution {provided_by}: pip install {provided_by}"
    try:
        extras = [e for e in metadata.metadata("diffkit").get_all("Provides-Extra") or [] if e not in NOT_PLUGIN_EXTRAS]
    except metadata.PackageNotFoundError:
        extras = []
    if not extras:
        return ""
    return "; plugins add components: " + ", ".join(f"pip install 'diffkit[{e}]'" for e in extras)


def load(kind: str, name: str, provided_by: str | None = None):
    """Import and return the component ``name`` of ``kind``, with a clear error if that fails.

    ``provided_by``: the distribution that provided the name where it was recorded (a run's config), for the hint."""
    if kind not in KINDS:
        raise RegistryError(f"unknown component kind {kind!r}; use one of {KINDS}")
    if (kind, name) in _LOCAL:
        return _LOCAL[(kind, name)]
    comp = discover().get((kind, name))
    if comp is None:
        available = ", ".join(names(kind)) or "none"
        raise RegistryError(f"no {SINGULAR[kind]} named {name!r} is installed (installed: {available}){_hint(provided_by)}")
    if comp.status == "conflict":
        raise RegistryError(comp.error)
    if (kind, name) in _LOADED:
        return _LOADED[(kind, name)]
    module, _, attr = comp.value.partition(":")
    try:
        obj = importlib_import(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of a plugin (sys.exit on import included) is reported, never fatal elsewhere
        comp.status, comp.error = "broken", f"{type(exc).__name__}: {exc}"
        raise RegistryError(f"{SINGULAR[kind]} {name!r} from {comp.distribution} {comp.version} is broken ({comp.error}); reinstall or fix that plugin") from exc
    comp.status = "ok"
    _LOADED[(kind, name)] = obj
    return obj


def importlib_import(module: str):
    import importlib

    return importlib.import_module(module)


def components(check: bool = True) -> list[Component]:
    """Every discovered component; with ``check`` each is imported to report ``ok`` or ``broken``. Plugins'
    claims on core names follow, with status ``conflict``."""
    out = []
    for (kind, name), comp in sorted(discover().items()):
        if check and comp.status not in ("conflict",):
            try:
                load(kind, name)
            except RegistryError:
                pass
        out.append(comp)
    return out + sorted(_SHADOWED, key=lambda c: (c.kind, c.name, c.distribution))  # plugins' ignored claims on core names
