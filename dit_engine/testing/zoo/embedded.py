"""Tiny zoo entry: the embedded digits model (``model=tiny``), the project's own trained DiT."""

from __future__ import annotations

from dit_engine.testing.conformance import PipelineCase, tiny_model_case
from dit_engine.testing.zoo import zoo_entry


@zoo_entry("tiny", adapter="tiny", pipeline="TinyDiTPipeline", note="the shipped weights; two digits")
def tiny() -> PipelineCase:
    return tiny_model_case(steps=6)
