"""Entry-point registry of adapters and transforms.

First-party and third-party plugins are found the same way: through the entry-point groups
``dit_engine.adapters`` (name = model family, e.g. ``flux``) and ``dit_engine.transforms``
(name = ``<stage>.<impl>``, e.g. ``cache.dbcache``). Lookup is lazy: only the entry point that is
asked for is imported. Two distributions claiming one name is an error naming both, never a silent
pick; names in the ``blocked`` list are refused even when installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from dit_engine.errors import RegistryError, UnsupportedPipelineError

ADAPTER_GROUP = "dit_engine.adapters"
#: The adapter that infers block lists itself: the fallback when no family adapter matches.
AUTO_ADAPTER = "auto"
#: The distribution whose adapters are first-party (a plugin serving the same class wins).
FIRST_PARTY = "dit_engine"
TRANSFORM_GROUP = "dit_engine.transforms"
#: A transform's config dataclass in a torch-free module, under the transform's name (optional):
#: what composing a config reads, so it need not import the transform.
SCHEMA_GROUP = "dit_engine.schemas"


@dataclass(frozen=True)
class Provider:
    """Where a plugin came from: entry-point name and value, distribution and version."""

    name: str
    value: str
    distribution: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "distribution": self.distribution, "version": self.version}


def _provider(ep: EntryPoint) -> Provider:
    dist = ep.dist
    return Provider(
        name=ep.name,
        value=ep.value,
        distribution=dist.metadata["Name"] if dist is not None else "<unknown>",
        version=dist.version if dist is not None else "<unknown>",
    )


class Registry:
    """Lazy lookup of plugin classes by entry-point name.

    Args:
        blocked: entry-point names that must not be loaded (config key ``blocked``).
        entry_point_source: callable ``group -> iterable of EntryPoint``; tests pass a fake one.
    """

    def __init__(self, blocked: Iterable[str] = (), entry_point_source=None):
        self.blocked = frozenset(blocked)
        self._source = entry_point_source or (lambda group: entry_points(group=group))
        self._groups: dict[str, tuple[EntryPoint, ...]] = {}
        self._loaded: dict[tuple[str, str], tuple[type, Provider]] = {}

    def _entry_points(self, group: str) -> tuple[EntryPoint, ...]:
        # Scanned once per registry: a scan reads every installed distribution's metadata, and one
        # adapter lookup asks for the adapter group dozens of times.
        if group not in self._groups:
            self._groups[group] = tuple(self._source(group))
        return self._groups[group]

    def names(self, group: str) -> list[str]:
        """All names installed in ``group`` (blocked ones included), sorted."""
        return sorted({ep.name for ep in self._entry_points(group)})

    def _entry_point(self, group: str, name: str) -> EntryPoint:
        kind = "adapter" if group == ADAPTER_GROUP else "transform"
        if name in self.blocked:
            raise RegistryError(f"{kind} '{name}' is blocked by the config key 'blocked'; remove it from blocked to use it")
        found = [ep for ep in self._entry_points(group) if ep.name == name]
        # The same distribution seen twice (e.g. an editable install listed on two paths) is one claim.
        claims = {(_provider(ep).distribution, ep.value): ep for ep in found}
        if not claims:
            known = ", ".join(n for n in self.names(group) if n not in self.blocked) or "none"
            raise RegistryError(f"no {kind} named '{name}' is installed (group {group}); installed: {known}")
        if len({dist for dist, _ in claims}) > 1:
            who = " and ".join(f"{dist} ({value})" for dist, value in sorted(claims))
            raise RegistryError(
                f"{kind} name '{name}' is claimed by {who}; uninstall one of them or add '{name}' to blocked "
                "and use the other under its own name"
            )
        return next(iter(claims.values()))

    def load(self, group: str, name: str) -> tuple[type, Provider]:
        """Import and return ``(class, provider)`` for one entry point; cached per registry."""
        key = (group, name)
        if key not in self._loaded:
            ep = self._entry_point(group, name)
            try:
                obj = ep.load()
            except Exception as err:  # a broken plugin must name itself, not crash the run anonymously
                raise RegistryError(f"entry point '{name}' ({ep.value}) failed to import: {err}") from err
            self._loaded[key] = (obj, _provider(ep))
        return self._loaded[key]

    def adapter(self, name: str):
        """Instantiate the adapter registered as ``name``."""
        cls, provider = self.load(ADAPTER_GROUP, name)
        adapter = cls()
        adapter.provider = provider
        return adapter

    def transform_class(self, name: str) -> tuple[type, Provider]:
        """The transform class registered as ``name`` (``<stage>.<impl>``) and its provider."""
        return self.load(TRANSFORM_GROUP, name)

    def config_class(self, name: str) -> type | None:
        """The config dataclass of the transform ``name``: its ``dit_engine.schemas`` entry point
        (imports no torch) when it has one, else the transform's ``config_class`` (imports it)."""
        if name in self.names(SCHEMA_GROUP) and name not in self.blocked:
            schema, _ = self.load(SCHEMA_GROUP, name)
            return schema
        return self.transform_class(name)[0].config_class

    def adapters(self):
        """Every installed, non-blocked adapter (imported on demand, in name order)."""
        for name in self.names(ADAPTER_GROUP):
            if name not in self.blocked:
                yield self.adapter(name)

    def adapter_for_pipeline(self, pipe, name: str | None = None):
        """The adapter for a loaded pipeline: the named one (checked to match), else the installed,
        non-blocked adapter that serves the pipeline's class, else the automatic adapter ``auto``.

        The adapter naming the most specific class of the pipeline wins; at equal specificity a
        third-party adapter wins over the first-party one (installing a plugin is how a user
        replaces it), and two third-party adapters are an error naming both.
        """
        if name is not None:
            adapter = self.adapter(name)
            if not adapter.matches(pipe):
                serves = ", ".join(adapter.pipeline_classes) or "pipelines with a transformer component"
                raise UnsupportedPipelineError(
                    f"adapter '{name}' does not serve {type(pipe).__name__} (it serves {serves}); "
                    "drop the model= override to pick the adapter automatically"
                )
            return adapter
        mro = [cls.__name__ for cls in type(pipe).__mro__]
        matching = [a for a in self.adapters() if a.name != AUTO_ADAPTER and a.matches(pipe)]
        if matching:
            # the adapter of the most specific class wins (a plugin's pipeline subclass over its
            # diffusers base); at equal specificity a plugin over the first-party adapter
            def specificity(adapter) -> int:
                return min(mro.index(name) for name in adapter.pipeline_classes if name in mro)

            best = min(specificity(a) for a in matching)
            matching = [a for a in matching if specificity(a) == best]
            plugins = [a for a in matching if a.provider is None or a.provider.distribution.replace("-", "_").lower() != FIRST_PARTY]
            if len(plugins) > 1:
                raise UnsupportedPipelineError(
                    f"adapters {' and '.join(repr(a.name) for a in plugins)} both serve {type(pipe).__name__}; "
                    f"pick one with model=<name> or add the other to blocked")
            return (plugins or matching)[0]
        transformers = {n: type(m).__name__ for n, m in (getattr(pipe, "components", None) or {}).items()
                        if n.startswith("transformer") and m is not None}
        if AUTO_ADAPTER not in self.blocked and AUTO_ADAPTER in self.names(ADAPTER_GROUP):
            auto = self.adapter(AUTO_ADAPTER)
            if auto.matches(pipe):
                return auto
        found = ", ".join(f"{n}: {c}" for n, c in transformers.items()) or "no transformer component"
        raise UnsupportedPipelineError(
            f"no installed adapter serves {type(pipe).__name__} ({found}); installed adapters: "
            f"{', '.join(a.name for a in self.adapters() if a.name != AUTO_ADAPTER)}. The automatic adapter serves pipelines "
            "with a transformer component; otherwise install a package that provides an adapter (entry-point group "
            "dit_engine.adapters) or write your own (docs/plugins.md)"
        )
