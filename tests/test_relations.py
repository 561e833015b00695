"""Relations between groups: declared as data, checked in one place, loud when a key moves."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from dit_engine.config.schema import BlockCacheConfig
from dit_engine.config import compose_config
from dit_engine.errors import PlanError
from dit_engine.parallel_dims import ParallelDims
from dit_engine.relations import RELATIONS, PlanFacts, Relation, Side, declaration_problems, relation_problems
from conftest import prepare


def test_the_shipped_relations_read_keys_their_schemas_have():
    assert declaration_problems() == []
    assert {relation.kind for relation in RELATIONS} == {"conflicts", "requires", "precedes"}


@dataclass
class RenamedCacheConfig:
    """A fixture schema: the shared cache settings with ``separate_cfg`` renamed."""

    name: str = "dbcache"
    split_cfg: bool | None = None


def test_a_key_renamed_in_a_schema_fails_every_plan_naming_both_sides():
    relation = next(r for r in RELATIONS if r.second.keys == ("separate_cfg",))
    renamed = dataclasses.replace(relation, second=Side("cache", RenamedCacheConfig, ("separate_cfg",)))
    facts = PlanFacts(configs={"cache": RenamedCacheConfig()}, dims=ParallelDims(), lora=_no_lora(), transform_classes={})
    problems = relation_problems(facts, (renamed,))
    assert len(problems) == 1
    assert "parallel.cfg" in problems[0] and "cache.separate_cfg" in problems[0]  # both sides named
    assert "RenamedCacheConfig has no key 'separate_cfg'" in problems[0]
    # even a plan that does not use the relation fails: the table and the schema disagree
    assert relation_problems(PlanFacts(configs={}, dims=ParallelDims(), lora=_no_lora(), transform_classes={}), (renamed,))


def _no_lora():
    from dit_engine.config.schema import LoraConfig

    return LoraConfig()


@pytest.mark.parametrize("overrides,reason", [
    (["parallel=cfg2", "workload.guidance_scale=3", "cache=dbcache", "cache.separate_cfg=false"], "branches cannot follow branch 0"),
    (["parallel=ulysses2", "compile=regional", "compile.fullgraph=true"], "cannot hold the sequence-parallel attention"),
    (["parallel=tp2", "quant=int8_weight_only"], "quant= with tensor parallelism is not supported"),
    (["calibrator=taylorseer"], "needs a cache to calibrate"),
    (["calibrator=taylorseer", "cache=dbprune"], "cannot bind to cache.dbprune"),
    (["compile=full", "compile.fullgraph=true", "cache=dbcache"], "cannot hold the cache decisions"),
])
def test_relations_refuse_what_cannot_run_together(overrides, reason):
    with pytest.raises(PlanError, match=reason):
        prepare(compose_config([*overrides, "dry_run=true"]))


def test_a_relation_whose_side_is_absent_does_not_apply():
    relation = Relation("conflicts", Side("quant"), Side("parallel", ParallelDims, ("tp",)), "never", when=lambda facts: True)
    facts = PlanFacts(configs={"quant": object()}, dims=ParallelDims(tp=2), lora=_no_lora(), transform_classes={})
    assert relation_problems(facts, (relation,)) == []  # no parallel step chosen
    with_parallel = dataclasses.replace(facts, configs={"quant": object(), "parallel": object()})
    assert relation_problems(with_parallel, (relation,)) == ["never"]


def test_a_cache_outside_the_shared_settings_is_not_read_for_separate_cfg():
    relation = next(r for r in RELATIONS if r.second.keys == ("separate_cfg",))
    facts = PlanFacts(configs={"parallel": object(), "cache": object()}, dims=ParallelDims(cfg=2), lora=_no_lora(),
                      transform_classes={})
    assert relation_problems(facts, (relation,)) == []
    facts = dataclasses.replace(facts, configs={"parallel": object(), "cache": BlockCacheConfig(separate_cfg=False)})
    assert relation_problems(facts, (relation,)) == [relation.reason]
