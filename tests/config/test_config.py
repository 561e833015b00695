"""Every shipped YAML option composes and dry-runs; bad overrides fail with one-line fixes."""

from __future__ import annotations

import itertools
import json

import pytest
from omegaconf import OmegaConf

from dit_engine.config import compose_config, group_options
from dit_engine.config.groups import group_names
from conftest import missing_peer, prepare, with_peer_marks
from dit_engine.errors import ConfigError, PlanError

GROUPS = group_names()


def _cell(*choices: tuple[str, str]) -> list[str]:
    """Overrides for a dry run of the given (group, option) pairs.

    A calibrator needs a cache to bind to: when a calibrator is chosen and the cache group is not,
    the cell adds cache=dbcache. CFG parallel needs CFG on: the cell turns guidance on for it.
    ``parallel=auto`` needs ranks to lay out: the cell gives it two.
    """
    overrides = [f"{group}={option}" for group, option in choices]
    groups = {group: option for group, option in choices}
    if groups.get("calibrator", "none") != "none" and "cache" not in groups:
        overrides.append("cache=dbcache")
    if groups.get("parallel", "none").startswith("cfg"):
        overrides.append("workload.guidance_scale=3")
    if groups.get("parallel") == "auto":
        overrides.append("parallel.world_size=2")
    return overrides + ["dry_run=true"]


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group, include_plugins=False), f"group {group} ships no option"


@pytest.mark.parametrize("group,option", with_peer_marks([(g, o) for g in GROUPS for o in group_options(g, include_plugins=False)]))
def test_each_option_composes_and_compiles(group, option):
    refusal = expected_refusal({group: option})
    if refusal:  # e.g. a GPU-only quantization scheme on this CPU
        with pytest.raises(PlanError, match=refusal):
            prepare(compose_config(_cell((group, option))))
        return
    prepared = prepare(compose_config(_cell((group, option))))
    names = [step.name for step in prepared.plan.steps]
    assert "adapt.step_state" in names
    if group == "parallel" and option != "none":
        assert names[0] == "shard.torch_distributed"  # SHARD runs before ADAPT
    if group in ("cache", "calibrator") and option != "none":
        assert any(name.endswith(f".{prepared.cfg[group].name}") for name in names)
    assert prepared.plan.explain().count("\n") >= 5


@pytest.mark.parametrize("method", with_peer_marks(group_options("method", include_plugins=False)))
def test_each_method_bundle_composes_and_compiles(method):
    prepared = prepare(compose_config([f"+method={method}", "dry_run=true"]))
    names = [step.name for step in prepared.plan.steps]
    if method != "none":
        assert any(name.startswith("cache.") for name in names)


@pytest.mark.parametrize("experiment", group_options("experiment", include_plugins=False))
def test_each_experiment_composes_and_compiles(experiment):
    cfg = compose_config([f"+experiment={experiment}", "dry_run=true"])
    prepare(cfg)


#: A value outside an Enum field's closed set, refused when the config composes, naming the choices.
ENUM_CASES = [
    (["compile=regional", "compile.mode=fastest"], "compile.mode=fastest is unknown; use one of default, lite, reduce-overhead"),
    (["compile=regional", "compile.scope=half"], "compile.scope=half is unknown; use one of regional, full"),
    (["quant=int8_weight_only", "quant.scheme=int3"], "quant.scheme=int3 is unknown; use one of int8_weight_only, int8_dynamic"),
    (["quant=fp8_dynamic", "quant.granularity=per_block"], "quant.granularity=per_block is unknown; use one of per_row, per_tensor"),
    (["offload=model", "offload.mode=disk"], "offload.mode=disk is unknown; use one of model, sequential, group"),
    (["attention=native", "attention.backend=warp"], "attention.backend=warp is unknown; use one of flash, "),
    (["cache=scm", "cache.preset=turbo"], "cache.preset=turbo is unknown; use one of slow, medium, fast, ultra"),
    (["cache=scm", "cache.policy=sometimes"], "cache.policy=sometimes is unknown; use one of dynamic, static, adaptive"),
    (["cache=scm", "cache.skip_level=layer"], "cache.skip_level=layer is unknown; use one of blocks, model"),
]


@pytest.mark.parametrize("overrides,expected", ENUM_CASES)
def test_a_value_outside_a_closed_set_fails_at_compose_time(overrides, expected):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_enum_fields_keep_their_plain_spelling():
    """Compared, printed and written as the strings the YAML and the command line use."""
    cfg = compose_config(["compile=full", "compile.mode=max-autotune", "attention=native", "attention.backend=_native_math"])
    assert cfg.compile.mode == "max-autotune" and f"{cfg.compile.mode}" == "max-autotune"
    assert cfg.attention.backend == "_native_math"
    written = json.loads(json.dumps(OmegaConf.to_container(cfg.compile)))
    assert written["mode"] == "max-autotune" and written["scope"] == "full"


#: Pairs that must be refused at plan time, with the reason the refusal names.
UNCALIBRATABLE = ("none", "dbprune", "fit_signals", "calibrate", "calibration_run", "diffusers_fbc", "diffusers_taylorseer", "diffusers_magcache",
                  "diffusers_seacache", "cachedit_dbcache")
UNCALIBRATED_MODELS = ("wan", "qwen_image")  # no published TeaCache / MagCache data in their adapters


def expected_refusal(pair: dict[str, str]) -> str | None:
    if pair.get("model") == "auto":
        return "model=auto needs weights to trace"
    # (_cell adds cache=dbcache when a calibrator is chosen without a cache)
    if pair.get("cache", "dbcache") in UNCALIBRATABLE and pair.get("calibrator", "none") != "none":
        return "needs a cache to calibrate|cannot bind to cache"
    if pair.get("model") in UNCALIBRATED_MODELS and pair.get("cache") in ("teacache", "magcache"):
        return "cache=fit_signals"
    if pair.get("model") in UNCALIBRATED_MODELS and pair.get("cache") == "diffusers_magcache":
        return "needs a magnitude-ratio curve"
    if pair.get("model") == "wan" and pair.get("cache") == "cachedit_dbcache":
        return "wired for one transformer per pipeline"  # Wan 2.2 has two experts
    parallel = pair.get("parallel", "none")
    if parallel != "none" and pair.get("cache") in RANK_INCONSISTENT_CACHES:
        return "decides on each rank's own shard"
    if parallel.startswith("tp") and pair.get("model") == "wan":
        return "has no tensor-parallel plan"
    if pair.get("offload", "none") != "none":
        return "this run has no GPU"  # the tests run on a CPU
    if pair.get("attention", "none") not in ("none", "native"):
        return "is not available here|needs a CUDA GPU"
    if pair.get("quant") in ("fp8_dynamic", "fp8_dynamic_per_tensor", "int4_weight_only"):
        return "needs a CUDA GPU"  # the tests run on a CPU
    if pair.get("quant", "none") != "none" and parallel.startswith("tp"):
        return "quant= with tensor parallelism is not supported"
    if parallel == "cfg2" and pair.get("model") == "flux":
        return "needs two CFG branches"  # FLUX.1 is guidance-distilled: no negative call by default
    return None


#: caches that decide on one rank's shard alone (peers) or record one process (calibration)
RANK_INCONSISTENT_CACHES = {"diffusers_fbc", "diffusers_taylorseer", "diffusers_magcache", "diffusers_seacache", "cachedit_dbcache",
                            "fit_signals", "calibration_run"}


#: options that only scale a degree or swap a kernel of one already paired are left out of the
#: pairs (each is still compiled alone above): the pairs stay affordable on 2 cores
SAME_AS_PAIRED = {"calibration_run", "ulysses4", "ulysses8", "ring4", "tp4", "int8_dynamic", "fp8_weight_only", "fp8_dynamic_per_tensor",
                  "sage", "sequential", "group"}


#: groups that change how the model runs (devices, kernels, weights) rather than what is cached:
#: they are paired with each other and the models in full, but only with representative caches
#: (one per mechanism, and those they refuse), not with calibrators, workloads or reports
STACK_GROUPS = {"parallel", "quant", "compile", "attention", "offload"}
REPRESENTATIVE_CACHES = {"none", "dbcache", "dbprune", "scm_static", "teacache", "diffusers_fbc", "fit_signals"}


#: the model families paired with every other option: one per block-pattern kind the first-party
#: suites cover (every other family compiles alone above and runs in tests/families)
PAIRED_MODELS = {"tiny", "flux", "wan", "qwen_image"}


def pair_options(group: str, other: str) -> list[str]:
    options = [o for o in group_options(group, include_plugins=False) if o not in SAME_AS_PAIRED]
    if group == "model":
        options = [o for o in options if o in PAIRED_MODELS]
    if group == "cache" and other in STACK_GROUPS:
        options = [o for o in options if o in REPRESENTATIVE_CACHES]
    return options


def paired_groups(g1: str, g2: str) -> bool:
    """Whether the options of two groups are paired (a calibrator rides on its cache: cache x stack covers it)."""
    return not ({g1, g2} & STACK_GROUPS and {g1, g2} & {"workload", "report", "calibrator"})


def option_pairs() -> tuple[list[tuple[tuple[str, str], tuple[str, str]]], set[frozenset]]:
    """Every pair of options from two paired groups: (the refused pairs, the accepted pairs)."""
    refused, accepted = [], set()
    for (g1, g2) in itertools.combinations(GROUPS, 2):
        if not paired_groups(g1, g2):
            continue
        for o1, o2 in itertools.product(pair_options(g1, g2), pair_options(g2, g1)):
            if missing_peer(o1, o2):
                continue  # NEEDS_CACHEDIT: CI installs it, so CI checks these pairs
            if expected_refusal({g1: o1, g2: o2}):
                refused.append(((g1, o1), (g2, o2)))
            else:
                accepted.add(frozenset([(g1, o1), (g2, o2)]))
    return refused, accepted


def covering_cells(accepted: set[frozenset]) -> list[dict[str, str]]:
    """Cells of several groups' options that together contain every accepted pair (a pairwise
    covering set: one dry run checks many pairs). Every two options in a cell form an accepted
    pair, so a cell holds no pair the test does not ask for; a group left out keeps its default."""
    uncovered = set(accepted)
    cells = []
    for seed in sorted(accepted, key=sorted):
        if seed not in uncovered:
            continue
        cell = dict(seed)
        for group in GROUPS:
            if group in cell or not all(paired_groups(group, g) for g in cell):
                continue
            best, gain = None, 0
            for option in group_options(group, include_plugins=False):
                pairs = [frozenset([(group, option), item]) for item in cell.items()]
                if all(pair in accepted for pair in pairs) and expected_refusal({**cell, group: option}) is None:
                    new = sum(pair in uncovered for pair in pairs)
                    if new > gain:
                        best, gain = option, new
            if best is not None:
                cell[group] = best
        uncovered -= {frozenset(pair) for pair in itertools.combinations(cell.items(), 2)}
        cells.append(cell)
    return cells


def test_pairwise_combinations_compile():
    """Every pair of options from two groups compiles, or is refused with a reason that names the fix.

    Each refused pair is planned alone and must be refused with its reason; the accepted pairs are
    planned in a covering set of cells (each accepted pair in at least one cell that must compile)."""
    refused_pairs, accepted = option_pairs()
    for pair in refused_pairs:
        with pytest.raises(PlanError, match=expected_refusal(dict(pair))):
            prepare(compose_config(_cell(*pair)))
    cells = covering_cells(accepted)
    covered = set()
    for cell in cells:
        assert expected_refusal(cell) is None, cell
        try:
            prepare(compose_config(_cell(*cell.items())))
        except Exception as err:
            raise AssertionError(f"the cell {_cell(*cell.items())} did not compile: {err}") from err
        covered |= {frozenset(pair) for pair in itertools.combinations(cell.items(), 2)}
    assert accepted <= covered, sorted(map(sorted, accepted - covered))[:5]  # no accepted pair left unplanned
    assert len(accepted) >= len(GROUPS) and len(refused_pairs) >= 1


def test_cache_none_accepts_cache_settings_so_sweeps_can_cross_them():
    cfg = compose_config(["cache=none", "cache.threshold=0.2"])
    assert cfg.cache.name == "none" and cfg.cache.threshold == 0.2


def test_fbcache_is_f1b0_dbcache():
    cfg = compose_config(["cache=fbcache"])
    assert (cfg.cache.name, cfg.cache.front_blocks, cfg.cache.back_blocks) == ("dbcache", 1, 0)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["cache=dbcachee"], "unknown option cache=dbcachee; available cache options: cachedit_dbcache, "),
        (["model=sd9"], "unknown option model=sd9; available model options: allegro, auraflow, auto, bria,"),
        (["cache=dbcache", "cache.threshhold=0.1"], "unknown key cache.threshhold; valid keys: front_blocks, back_blocks, threshold"),
        (["cache=dbcache", "cache.threshold=abc"], "cache.threshold=abc is not a valid float"),
        (["calibrator.order=2"], "pick one first, e.g. calibrator=<option> calibrator.order=..."),
        (["dry_rnu=true"], "unknown key dry_rnu"),
    ],
)
def test_bad_overrides_name_the_fix(overrides, expected):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("alias,spelled_out", [
    (["+method=step_adaptive_foca_018"], ["+method=step_adaptive_foca", "cache.budget=0.18"]),
    (["+method=step_foca_018"], ["+method=step_foca_ultra", "cache.budget=0.18"]),
    (["+method=step_forecast_011"], ["+method=step_forecast_ultra", "cache.budget=0.11"]),
    (["+method=step_spectrum_018"], ["+method=step_spectrum_ultra", "cache.budget=0.18"]),
    (["+method=step_spectrum_011"], ["+method=step_spectrum_ultra", "cache.budget=0.11"]),
    (["attention=flex"], ["attention=native", "attention.backend=flex"]),
    (["attention=_native_math"], ["attention=native", "attention.backend=_native_math"]),
])
def test_option_names_earlier_issues_spelled_out_still_compose(alias, spelled_out):
    """Options folded into a setting of another option (issues 10, 13-15 named them) compose to
    exactly what they became, though no file carries their name any more."""
    assert compose_config(alias) == compose_config(spelled_out)
    assert not any(option.endswith(("_018", "_011")) for option in group_options("method", include_plugins=False))
