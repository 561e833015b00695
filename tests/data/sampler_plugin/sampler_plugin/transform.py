"""The plugin group's one technique: marks the transformer with its strength."""

from dataclasses import dataclass

from dit_engine.transforms.base import Transform
from sampler_plugin.groups import SamplerStage


@dataclass
class FancyConfig:
    name: str = "fancy"
    strength: int = 1


class FancyTransform(Transform):
    name = "sample.fancy"
    stage = SamplerStage.SAMPLE
    config_class = FancyConfig

    @classmethod
    def check(cls, config, context):
        return [] if config.strength > 0 else ["sampler.strength must be positive"]

    def apply(self, pipe, context):
        pipe.transformer.fancy_strength = self.config.strength

    def remove(self, pipe):
        del pipe.transformer.fancy_strength
