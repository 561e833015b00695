"""Relations between techniques, declared as data and checked in one place.

Every rule that involves two groups lives in :data:`RELATIONS`: what conflicts with what, what
requires what, what must run before what, each with its reason (the one-line fix a user reads).
A transform's own ``check`` looks at its own config and the plan facts only; this table is the one
place that reads another group's keys.

The keys a relation reads are declared on its sides, against the typed schema they belong to
(``Side("cache", BlockCacheConfig, ("separate_cfg",))``). The plan checks the declarations before
any relation is evaluated: a key renamed in a schema makes every plan fail with a message naming
both sides of the relation, instead of the relation silently passing because a lookup found no
key. A side applies to the chosen option when its config is an instance of the side's schema
(the shared cache settings, not a plugin's own cache config).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional

from dit_engine.config.schema import BlockCacheConfig
from dit_engine.compile.torch_compile import CompileConfig
from dit_engine.config.groups import get_group
from dit_engine.config.schema import LoraConfig
from dit_engine.offload.diffusers_offload import OffloadConfig
from dit_engine.parallel_dims import ParallelDims
from dit_engine.quant.torchao import QuantConfig
from dit_engine.transforms.attention_backend import SDPA_BACKENDS, AttentionBackendConfig
from dit_engine.transforms.protocols import ForecastTarget

Kind = Literal["conflicts", "requires", "precedes"]


@dataclass(frozen=True)
class Side:
    """One side of a relation: a group (or ``lora``, or ``parallel`` read as its degrees), the
    typed schema whose keys it reads, and those keys."""

    group: str
    schema: Optional[type] = None
    keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ", ".join(f"{self.group}.{key}" for key in self.keys) if self.keys else self.group


@dataclass(frozen=True)
class PlanFacts:
    """What relations are evaluated on: the typed config of every chosen step, by group, the
    validated parallel degrees, the LoRA settings and the transform class of every step."""

    configs: Mapping[str, Any]
    dims: ParallelDims
    lora: LoraConfig
    transform_classes: Mapping[str, type]

    def value(self, side: Side) -> Any:
        """The typed object ``side`` reads; None when its group is not in the plan (or its option's
        config is not of the side's schema)."""
        if side.group == "parallel" and side.schema is ParallelDims:
            return self.dims if "parallel" in self.configs else None
        if side.group == "lora":
            return self.lora if self.lora.path is not None else None
        config = self.configs.get(side.group)
        if config is None or (side.schema is not None and not isinstance(config, side.schema)):
            return None
        return config


@dataclass(frozen=True)
class Relation:
    """``first`` conflicts with / requires / precedes ``second``.

    * ``conflicts``: both sides present and ``when(facts)`` holds is a problem;
    * ``requires``: ``first`` present and ``when(facts)`` false is a problem (``when`` says whether
      what it needs is there);
    * ``precedes``: both present, ``first``'s stage must come before ``second``'s.

    ``reason`` is the problem's text: a string, or a function of the facts for texts that name
    the chosen options.
    """

    kind: Kind
    first: Side
    second: Side
    reason: str | Callable[[PlanFacts], str]
    when: Callable[[PlanFacts], bool] = lambda facts: True

    def text(self, facts: PlanFacts) -> str:
        return self.reason(facts) if callable(self.reason) else self.reason

    def __str__(self) -> str:
        return f"{self.first} {self.kind} {self.second}"


def _calibrator_without_cache(facts: PlanFacts) -> str:
    return f"calibrator={facts.configs['calibrator'].name} needs a cache to calibrate; add cache=dbcache (or another cache)"


def _calibrator_without_target(facts: PlanFacts) -> str:
    cache = facts.configs["cache"]
    return (f"calibrator={facts.configs['calibrator'].name} cannot bind to cache.{cache.name}: it keeps no residual to forecast; "
            "use cache=dbcache, fbcache or scm, or calibrator=none")


def _hooked_by_full_graph(facts: PlanFacts) -> str:
    hooked = ", ".join(group for group in ("cache", "calibrator") if group in facts.configs)
    return (f"compile=full with compile.fullgraph=true cannot hold the {hooked} decisions made in Python inside the model; "
            "use compile=regional (blocks compiled whole, decisions around them)")


def _lora_with(group: str, what: str) -> Callable[[PlanFacts], str]:
    def text(facts: PlanFacts) -> str:
        config = facts.configs[group]
        option = f"quant.scheme={_plain(config.scheme)}" if group == "quant" else f"compile.scope={_plain(config.scope)}"
        return (f"lora.path with {group}= ({option}) is not supported (the LoRA layers would be {what} away); "
                "drop one of them")
    return text


def _plain(value: Any) -> Any:
    """A setting as the user wrote it: an Enum member as its value (``int8_dynamic``)."""
    return value.value if isinstance(value, enum.Enum) else value


PARALLEL = Side("parallel", ParallelDims)

#: Every relation between groups, in the order their problems are reported.
RELATIONS: tuple[Relation, ...] = (
    # stage order (dit_engine.config.groups.Stage says why); checked so a plugin's stage cannot break it
    Relation("precedes", Side("cache"), Side("calibrator"), "a calibrator binds to the cache that is installed, so the cache "
             "stage must come first"),
    Relation("precedes", Side("quant"), Side("parallel"), "sharding must see the final (quantized) linear layer types"),
    Relation("precedes", Side("compile"), Side("offload"), "offload moves the finished modules; it must not be traced"),
    # what a technique needs from another
    Relation("requires", Side("calibrator"), Side("cache"), _calibrator_without_cache,
             when=lambda facts: "cache" in facts.configs),
    Relation("requires", Side("calibrator"), Side("cache"), _calibrator_without_target,
             when=lambda facts: "cache" not in facts.configs or isinstance(facts.transform_classes["cache"], ForecastTarget)),
    # what cannot run together
    Relation("conflicts", Side("compile", CompileConfig, ("fullgraph",)), Side("parallel", ParallelDims, ("ulysses", "ring")),
             "compile.fullgraph=true cannot hold the sequence-parallel attention in one graph (its collectives and the SDPA "
             "interception break dynamo's graph); drop compile.fullgraph, or use parallel.cfg_degree instead of "
             "parallel.ulysses_degree / ring_degree",
             when=lambda facts: facts.dims.sequence > 1 and facts.configs["compile"].fullgraph),
    Relation("conflicts", Side("parallel", ParallelDims, ("cfg",)), Side("cache", BlockCacheConfig, ("separate_cfg",)),
             "parallel.cfg_degree=2 computes each CFG branch on its own ranks, so branches cannot follow branch 0; "
             "drop cache.separate_cfg=false",
             when=lambda facts: facts.dims.cfg == 2 and facts.configs["cache"].separate_cfg is False),
    Relation("conflicts", Side("quant", QuantConfig), Side("parallel", ParallelDims, ("tp",)),
             "quant= with tensor parallelism is not supported (torchao tensors inside DTensor shards); use context "
             "parallelism (parallel=ulysses2) with quant=, or drop one",
             when=lambda facts: facts.dims.tp > 1),
    Relation("conflicts", Side("attention", AttentionBackendConfig, ("backend",)), Side("parallel", ParallelDims, ("ulysses", "ring")),
             lambda facts: (f"attention.backend={facts.configs['attention'].backend} bypasses the scaled-dot-product attention that "
                            "context parallelism distributes; with parallel.ulysses_degree / ring_degree use "
                            f"attention={' or '.join(SDPA_BACKENDS)}"),
             when=lambda facts: facts.dims.sequence > 1 and facts.configs["attention"].backend not in SDPA_BACKENDS),
    Relation("conflicts", Side("offload", OffloadConfig), PARALLEL,
             "offload= with parallel=: every rank must hold its weights on its own GPU for the collectives; drop one of them",
             when=lambda facts: facts.dims.world > 1),
    Relation("conflicts", Side("compile", CompileConfig, ("scope", "fullgraph")), Side("cache"), _hooked_by_full_graph,
             when=lambda facts: facts.configs["compile"].scope == "full" and facts.configs["compile"].fullgraph),
    Relation("conflicts", Side("lora", LoraConfig, ("path",)), Side("quant", QuantConfig, ("scheme",)), _lora_with("quant", "quantized")),
    Relation("conflicts", Side("lora", LoraConfig, ("path",)), Side("compile", CompileConfig, ("scope",)),
             _lora_with("compile", "compiled")),
    Relation("conflicts", Side("lora", LoraConfig, ("path",)), Side("parallel", ParallelDims, ("tp",)),
             "lora.path with tensor parallelism is not supported; use parallel.tp_degree=1",
             when=lambda facts: facts.dims.tp > 1),
)


def declaration_problems(relations: tuple[Relation, ...] = RELATIONS) -> list[str]:
    """Relations whose sides read a key their schema does not have (a key renamed on one side):
    each names both sides, so the mismatch is found at the first plan, not never."""
    problems = []
    for relation in relations:
        for side in (relation.first, relation.second):
            fields = {f.name for f in dataclasses.fields(side.schema)} if side.schema is not None else set()
            for key in side.keys:
                if key not in fields:
                    problems.append(f"the relation '{relation}' reads {side.group}.{key}, but {side.schema.__name__} has no key "
                                    f"'{key}' (renamed?); update the relation in dit_engine/relations.py to the schema's key")
    return problems


def relation_problems(facts: PlanFacts, relations: tuple[Relation, ...] = RELATIONS) -> list[str]:
    """The problems of a plan's relations, in table order (declarations checked first)."""
    problems = declaration_problems(relations)
    if problems:
        return problems
    for relation in relations:
        first, second = facts.value(relation.first), facts.value(relation.second)
        if first is None:
            continue
        if relation.kind == "requires":
            if not relation.when(facts):
                problems.append(relation.text(facts))
        elif second is None:
            continue
        elif relation.kind == "conflicts":
            if relation.when(facts):
                problems.append(relation.text(facts))
        elif _stage(relation.first.group) >= _stage(relation.second.group):
            problems.append(f"{relation.first.group} must run before {relation.second.group}: {relation.text(facts)}")
    return problems


def _stage(group: str) -> int:
    return int(get_group(group).stage)
