"""``compile=``: torch.compile of the transformer, regional (each block) or whole.

**regional** (the default preset, as diffusers' ``compile_repeated_blocks``): every block of the
adapter's block lists gets its ``forward`` compiled. It is installed *beneath* every hook (through
:class:`~dit_engine.transforms.protocols.WrapsInner`, before any plan step is applied), so the caches' decisions, the
step state and the context-parallel split hooks run in Python around the compiled blocks: a block
compiles to one graph with any cache installed (``compile.fullgraph=true`` proves it), and since
blocks of one list share their code, one compilation serves all of them.

**full**: the transformer's ``forward`` is compiled, with everything the other stages hook inside
it; block caches then cut the graph at their decisions (dynamo graph breaks), so ``fullgraph`` is
refused with them.

Compiled modules stay compiled: ``remove()`` refuses and says to reload. Recompilation is bounded:
one graph per block code and input shape (``dynamic=null`` lets torch mark a dimension dynamic
after it first changes, e.g. a batch doubled by CFG); the counters are in the run's stats.
"""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.compat import dynamo_backends, dynamo_graph_counters
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, Lifecycle, PlanContext, Transform
from dit_engine.compile.config import CompileConfig, Scope, Mode  # noqa: F401 - the schema, torch-free (re-exported)


def known_backends() -> list[str]:
    return sorted(set(dynamo_backends()) | {"eager", "aot_eager", "inductor"})


#: torch.compile backends that torch lists but that need another package installed.
BACKEND_PACKAGES = {"tvm": "tvm", "openxla": "torch_xla", "openxla_eval": "torch_xla", "onnxrt": "onnxruntime"}


def _backend_problems(backend: str, device: torch.device | None) -> list[str]:
    """A backend torch knows that cannot run here: its package missing, or CUDA graphs off CUDA."""
    import importlib.util

    package = BACKEND_PACKAGES.get(backend)
    if package is not None and importlib.util.find_spec(package) is None:
        return [f"compile.backend={backend} needs the {package} package, which is not installed; use inductor (or install {package})"]
    if backend == "cudagraphs" and (device is None or device.type != "cuda"):
        return [f"compile.backend=cudagraphs records CUDA graphs, and model.device={device} is not a CUDA device; "
                "use inductor (or run on a GPU)"]
    return []


class CompileTransform(Transform):
    """Compiles each transformer block (regional) or each transformer (full)."""

    name = "compile.torch_compile"
    stage = Stage.COMPILE
    config_class = CompileConfig
    lifecycle = Lifecycle(reversible=False)

    @classmethod
    def check(cls, config: CompileConfig, context: PlanContext) -> list[str]:
        problems = []
        if config.backend not in known_backends() or config.backend.endswith("_TESTING_ONLY"):
            problems.append(f"compile.backend={config.backend} is not a torch.compile backend; use inductor, aot_eager or eager")
        else:
            problems.extend(_backend_problems(config.backend, context.device))
        return problems

    @classmethod
    def describe(cls, config: CompileConfig, model_info: ModelInfo) -> str:
        what = f"each of the {model_info.total_blocks} blocks" if config.scope == "regional" else "the whole transformer"
        options = f"mode={config.mode or 'default'}, dynamic={config.dynamic}, fullgraph={config.fullgraph}, backend={config.backend}"
        return f"torch.compile of {what} ({options}); irreversible"

    def _compiled(self, forward):
        c = self.config
        return torch.compile(forward, mode=c.mode if c.mode != "default" else None, dynamic=c.dynamic,
                             fullgraph=c.fullgraph, backend=c.backend)

    def apply_inner(self, pipe: Any, context: ApplyContext) -> None:
        self.before = dynamo_graph_counters()
        self.compiled = 0
        for transformer in context.transformers.values():
            if self.config.scope == "full":
                transformer.forward = self._compiled(transformer.forward)
                self.compiled += 1
                continue
            for _spec, blocks in context.adapter.block_lists(transformer):
                for block in blocks:
                    block.forward = self._compiled(block.forward)
                    self.compiled += 1

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        pass  # all done beneath the hooks, in apply_inner

    def remove(self, pipe: Any) -> None:
        pass  # irreversible: Handle.remove() refuses before it gets here

    def reset_stats(self) -> None:
        self.before = dynamo_graph_counters()

    def stats(self) -> dict[str, Any]:
        now = dynamo_graph_counters()
        return {"scope": self.config.scope, "compiled_modules": self.compiled,
                **{key: now[key] - self.before[key] for key in now}}
