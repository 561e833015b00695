"""A plugin's config group (torch-free, as the dit_engine.groups entry point must be)."""

import enum

from dit_engine.config.groups import ConfigGroup


class SamplerStage(enum.IntEnum):
    SAMPLE = 35  # after ADAPT (30), before CACHE (40)


SAMPLER = ConfigGroup("sampler", SamplerStage.SAMPLE)
