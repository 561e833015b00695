"""Parallelism on torch.distributed (``parallel=``): Ulysses, Ring, USP, CFG and tensor parallel.

Modules: :mod:`.transform` (the plan step and its checks), :mod:`.mesh` (process group and device
mesh), :mod:`.sharding` (where the sequence is split and gathered), :mod:`.attention` (Ulysses /
Ring attention for any shape), :mod:`.collectives`, :mod:`.cfg` (CFG parallel), :mod:`.tensor`
(tensor parallel) and :mod:`.launch` (the CLI starting its ranks). See docs/parallel.md.
"""
