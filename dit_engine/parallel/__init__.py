"""Parallelism on torch.distributed (``parallel=``): Ulysses, Ring, USP, CFG and tensor parallel.

Modules: :mod:`.transform` (the plan step, its checks and its per-rank report), :mod:`.mesh`
(process group and device mesh), :mod:`.sharding` (where the sequence is split and gathered),
:mod:`.attention` (Ulysses / Ring attention for any shape), :mod:`.collectives`, :mod:`.cfg` (CFG
parallel) and :mod:`.tensor` (tensor parallel). Starting ranks is :mod:`dit_engine.launch`'s job.
See docs/parallel.md.
"""
