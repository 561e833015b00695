"""One-line error reporting shared by dit_engine's command-line entry points."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn


#: ``extra`` key of a log record that ``quiet=true`` still shows on the console: a run's final
#: line, which says where its outputs went (``log.info(..., extra={FINAL_LINE: True})``).
FINAL_LINE = "dit_engine_final"


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def fail(message: object, program: str = "dit_engine") -> NoReturn:
    """Print ``<program>: error: <message>`` on stderr and exit with code 2 (bad input)."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(2)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments in dit_engine's one-line format (and usage), exit 2."""

    def __init__(self, *args, usage_line: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.usage_line = usage_line

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; usage: {self.usage_line}")


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_known_noise() -> None:
    """Drop library messages that say nothing to a dit_engine user: transformers' notice that its
    image processors fall back to PIL without torchvision (dit_engine never needs torchvision),
    printed on every run that loads a diffusers pipeline.

    For the command-line entry points only (the CLI, the server, a rank's worker), called before
    they import diffusers: ``import dit_engine`` leaves other libraries' logging as it is."""
    logging.getLogger("transformers.utils.import_utils").addFilter(_DropMessage("requires torchvision (not installed)"))
    # Importing diffusers imports torchao when it is installed (dit_engine's quant= uses it):
    # torchao then reports CUDA kernels it cannot load on this machine and a missing Triton, torch
    # warns about torchao's enum registrations, and diffusers about torchao's old tensor types.
    # None of it concerns a run; errors still raise.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").addFilter(_DropMessage("Unable to import `torchao` Tensor objects"))
