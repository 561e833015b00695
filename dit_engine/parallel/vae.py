"""VAE parallel (``parallel.vae``): a diffusers VAE's decode (and encode) split by rows over the
ranks of a process group, exact to float rounding.

Every rank calls ``vae.decode`` / ``vae.encode`` with the same whole input. Entering the decoder
(encoder), each rank keeps a contiguous chunk of rows (the H axis, dim -2 of ``(B, C, H, W)`` and
``(B, C, T, H, W)``) and every activation below stays split that way; leaving it, the output rows
of every rank are gathered, so every rank returns the whole output. In between:

* **halo units** (convolutions, and modules that pad then convolve, wrapped as one unit at the
  outermost padding module) get ``h = round_up(kernel_h - 1, stride_h)`` rows from each
  neighbouring rank on each interior side, run their original forward (its own padding of any
  mode applies as before at the image's true top and bottom) and crop ``h // stride`` output rows
  from each interior side. That is exact for any stride-1 conv and for stride-2 downsampling when
  every chunk starts on a multiple of the stride, which the encoder's split guarantees (its chunk
  boundaries are multiples of the encoder's whole spatial downsampling factor);
* ``nn.GroupNorm`` takes its statistics over the whole image: per (batch, group) the sum and the
  count are all-reduced, then the sum of squared deviations (two passes, for accuracy);
* the **mid block** (the lowest resolution, where self-attention sees every pixel) runs whole on
  every rank: its input rows are gathered, it runs unchanged, each rank keeps its rows of the
  output. Attention found elsewhere gets the same treatment. A mid block without attention (LTX)
  is split like the rest;
* LTX's decoder noise injection draws the whole image's noise on every rank (the same draws, in the
  same order, as one process) and adds this rank's rows;
* everything else (activations, channel norms, nearest upsampling by integer factors, pixel
  (un)shuffles, per-channel scale and shift, convs one row high, temporal ops) is local to a row.

Only the classes in :data:`VAE_PARALLEL_CLASSES` are supported, and only the module classes this
file names (their forward code was read for anything that mixes rows): anything else is refused
with a :class:`~dit_engine.errors.DitEngineError`. The split is spatial only: video VAEs (Wan, LTX,
HunyuanVideo) decode causally frame by frame, and their temporal axis is never split. Spatial
tiling (``vae.use_tiling``) is turned off while installed (the split already bounds each rank's
memory) and restored on :meth:`VaeParallel.remove`.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from dit_engine.errors import DitEngineError

if TYPE_CHECKING:
    from dit_engine.parallel.collectives import SequenceGroup

#: the diffusers VAE classes ``parallel.vae`` can split (class names: a check needs no VAE)
VAE_PARALLEL_CLASSES = frozenset({
    "AutoencoderKL",  # FLUX.1, SD3, most image pipelines
    "AutoencoderKLFlux2",  # FLUX.2: AutoencoderKL's encoder and decoder
    "AutoencoderKLWan",  # Wan 2.1 and 2.2
    "AutoencoderKLQwenImage",  # Qwen-Image (Wan-like)
    "AutoencoderKLLTXVideo",
    "AutoencoderKLHunyuanVideo",
})


def vae_parallel_problem(class_name: str) -> str | None:
    """One line saying why ``parallel.vae=true`` cannot split a VAE of ``class_name``, or None."""
    if class_name in VAE_PARALLEL_CLASSES:
        return None
    return (f"parallel.vae=true does not know VAE class {class_name}; supported: "
            f"{', '.join(sorted(VAE_PARALLEL_CLASSES))}; set parallel.vae=false")


# Module classes, by name, whose forward code was read (diffusers 0.42). Containers route the main
# tensor through their children and otherwise only do row-local work (per pixel, per channel, per
# sample, along time, nearest upsampling by integer factors, reshapes that keep each row's values
# in its row once chunks are aligned): their children are visited. Local leaves are row-local
# as a whole and are not visited.
_CONTAINERS = frozenset({
    "ModuleList", "Sequential",
    # AutoencoderKL / AutoencoderKLFlux2 (models/autoencoders/vae.py, unets/unet_2d_blocks.py)
    "Encoder", "Decoder", "DownEncoderBlock2D", "UpDecoderBlock2D", "UNetMidBlock2D", "ResnetBlock2D", "Upsample2D",
    "AttnDownEncoderBlock2D", "AttnUpDecoderBlock2D",  # their attention runs whole
    # AutoencoderKLWan
    "WanEncoder3d", "WanDecoder3d", "WanMidBlock", "WanResidualBlock", "WanResample", "WanUpBlock",
    "WanResidualUpBlock", "WanResidualDownBlock",
    # AutoencoderKLQwenImage
    "QwenImageEncoder3d", "QwenImageDecoder3d", "QwenImageMidBlock", "QwenImageResidualBlock", "QwenImageResample",
    "QwenImageUpBlock",
    # AutoencoderKLLTXVideo
    "LTXVideoEncoder3d", "LTXVideoDecoder3d", "LTXVideoMidBlock3d", "LTXVideoDownBlock3D", "LTXVideo095DownBlock3D",
    "LTXVideoUpBlock3d", "LTXVideoResnetBlock3d", "LTXVideoUpsampler3d", "LTXVideoDownsampler3d",
    # AutoencoderKLHunyuanVideo
    "HunyuanVideoEncoder3D", "HunyuanVideoDecoder3D", "HunyuanVideoMidBlock3D", "HunyuanVideoDownBlock3D",
    "HunyuanVideoUpBlock3D", "HunyuanVideoResnetBlockCausal3D", "HunyuanVideoUpsampleCausal3D",
    "HunyuanVideoDownsampleCausal3D",
})
_LOCAL_LEAVES = frozenset({
    "SiLU", "Mish", "GELU", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Identity", "Dropout",
    "LayerNorm", "RMSNorm", "WanRMS_norm", "QwenImageRMS_norm",  # over channels, per pixel
    "AvgDown3D", "DupUp3D",  # Wan 2.2 shortcuts: space-to-channel reshapes (aligned by the convs beside them)
    "PixArtAlphaCombinedTimestepSizeEmbeddings",  # LTX: embeds the timestep, no pixels
})
#: modules that pad in their forward and then call one inner conv: halo-extended as one unit
_PADDING_UNITS = frozenset({"Downsample2D", "HunyuanVideoCausalConv3d", "LTXVideoCausalConv3d"})
_PAD_LAYERS = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReplicationPad2d, nn.ReplicationPad3d,
               nn.ReflectionPad2d, nn.ReflectionPad3d)
#: self-attention over all pixels: runs whole (gather, run, keep this rank's rows)
_ATTENTION = frozenset({"Attention", "WanAttentionBlock", "QwenImageAttentionBlock"})
_CONVS = (nn.Conv2d, nn.Conv3d)
#: keyword names a decoder, encoder or block may take its main tensor under
_INPUT_NAMES = ("sample", "hidden_states", "x", "z", "inputs")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _main_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[tuple, dict]]]:
    """The call's main tensor and a function giving the call's (args, kwargs) with it replaced."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    for name in _INPUT_NAMES:
        if isinstance(kwargs.get(name), torch.Tensor):
            return kwargs[name], lambda new, name=name: (args, {**kwargs, name: new})
    raise DitEngineError("parallel.vae: a split module was called without a tensor input it can split; "
                         "set parallel.vae=false")


class _Survey:
    """What a decoder or encoder holds: halo units, group norms, modules run whole, LTX noise
    resnets, the rows each chunk must be a multiple of, and the most halo rows any unit needs."""

    def __init__(self, vae_name: str, role: str):
        self.vae_name, self.role = vae_name, role
        self.halo: list[tuple[nn.Module, int, int]] = []  # (unit, halo rows h, row stride)
        self.norms: list[nn.GroupNorm] = []
        self.whole: list[nn.Module] = []
        self.noisy: list[nn.Module] = []
        self.align = 1
        self.most_halo = 0
        self._seen: set[int] = set()  # a module shared by two parents is wrapped once

    def refuse(self, path: str, why: str) -> DitEngineError:
        return DitEngineError(f"parallel.vae: {self.vae_name}'s {self.role} module {path} {why}; "
                              "set parallel.vae=false")

    def visit_root(self, root: nn.Module) -> None:
        if type(root).__name__ not in _CONTAINERS:
            raise self.refuse(type(root).__name__, "is not a decoder/encoder class parallel.vae knows")
        if type(root).__name__ == "LTXVideoEncoder3d":  # patchifies its input: p x p pixels per row of patches
            self.align *= int(root.patch_size)
        for name, child in root.named_children():
            if name == "mid_block" and _holds_attention(child):
                self.whole.append(child)
            else:
                self.visit(child, name)

    def visit(self, module: nn.Module, path: str) -> None:
        if id(module) in self._seen:
            return
        self._seen.add(id(module))
        kind = type(module).__name__
        if kind in _ATTENTION or kind.endswith("AttentionBlock"):
            self.whole.append(module)
        elif isinstance(module, nn.GroupNorm):
            self.norms.append(module)
        elif kind in _PADDING_UNITS or _is_pad_then_conv(module):
            self.add_padding_unit(module, path)
        elif isinstance(module, _CONVS):
            self.add_conv(module, module, path)
        elif isinstance(module, nn.Upsample):
            self.check_upsample(module, path)
        elif kind in _LOCAL_LEAVES:
            pass
        elif kind in _CONTAINERS:
            if kind == "ResnetBlock2D" and (module.up or module.down):  # resamples with functions, unseen
                raise self.refuse(path, "resamples inside a resnet block")
            if kind == "LTXVideoResnetBlock3d" and module.per_channel_scale1 is not None:
                self.noisy.append(module)
            if kind == "LTXVideoDownsampler3d":  # folds stride x stride pixels into channels after its conv
                self.align *= int(module.stride[1])
            for name, child in module.named_children():
                self.visit(child, f"{path}.{name}")
        elif isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose3d):
            raise self.refuse(path, f"is a transposed convolution ({kind})")
        else:
            raise self.refuse(path, f"is of class {kind}, which parallel.vae does not know to be row-local")

    def add_padding_unit(self, unit: nn.Module, path: str) -> None:
        convs = [m for m in unit.modules() if isinstance(m, _CONVS)]
        if not convs and type(unit).__name__ == "Downsample2D":  # use_conv=False: average pooling
            pool = unit.conv
            if not isinstance(pool, nn.AvgPool2d) or pool.kernel_size != pool.stride:
                raise self.refuse(path, "downsamples with a pooling parallel.vae does not know")
            self.align *= int(pool.stride if isinstance(pool.stride, int) else pool.stride[0])
            return
        if len(convs) != 1:
            raise self.refuse(path, f"pads then runs {len(convs)} convolutions (parallel.vae expects one)")
        self.add_conv(unit, convs[0], path)

    def add_conv(self, unit: nn.Module, conv: nn.Module, path: str) -> None:
        if conv.padding_mode == "circular":
            raise self.refuse(path, "pads circularly (the image's top row would need its bottom rows)")
        kernel, stride, dilation = conv.kernel_size[-2], conv.stride[-2], conv.dilation[-2]
        span = dilation * (kernel - 1)  # rows one output row sees beyond its first
        if isinstance(conv.padding, tuple) and conv.padding[-2] > span:
            raise self.refuse(path, "pads more rows than its kernel spans")
        self.align *= stride
        if span == 0:  # a 1-row kernel needs no neighbour rows
            return
        rows = _round_up(span, stride)
        if unit is conv and isinstance(conv.padding, tuple):
            # the conv pads itself by p rows: output row i sees rows [s*i - p, s*i - p + span], so
            # a chunk needs p rows from above and span + 1 - s - p from below (1 and 1 for a 3x3)
            pad = conv.padding[-2]
            rows = _round_up(max(pad, span + 1 - stride - pad, 0), stride)
        self.halo.append((unit, rows, stride))
        self.most_halo = max(self.most_halo, rows)

    def check_upsample(self, module: nn.Upsample, path: str) -> None:
        factors = module.scale_factor if isinstance(module.scale_factor, tuple) else (module.scale_factor,)
        if module.mode not in ("nearest", "nearest-exact") or module.size is not None or any(
                f is None or float(f) != int(f) for f in factors):
            raise self.refuse(path, f"upsamples with mode={module.mode!r} (only nearest by integer factors "
                                    "is row-local)")


def _holds_attention(module: nn.Module) -> bool:
    return any(type(m).__name__ in _ATTENTION or type(m).__name__.endswith("AttentionBlock") for m in module.modules())


def _is_pad_then_conv(module: nn.Module) -> bool:
    """Wan's and Qwen-Image's downsampler: ``nn.Sequential(ZeroPad2d((0, 1, 0, 1)), Conv2d(k3, s2))``."""
    children = list(module.children())
    return (isinstance(module, nn.Sequential) and len(children) == 2 and isinstance(children[0], _PAD_LAYERS)
            and isinstance(children[1], _CONVS))


class _Undo:
    """Everything installed, undone in reverse order: instance forwards restored, hooks removed,
    attributes put back."""

    def __init__(self):
        self._steps: list[Callable[[], None]] = []

    def forward(self, module: nn.Module, function: Callable, **bound) -> None:
        """Make ``module.forward`` ``function(*args, original=<the forward it had>, **bound, **kwargs)``."""
        had_own = "forward" in module.__dict__  # someone (accelerate, another wrapper) set one before us
        previous = module.__dict__.get("forward")
        module.forward = functools.partial(function, original=module.forward, **bound)

        def undo():
            if had_own:
                module.forward = previous
            else:
                del module.forward

        self._steps.append(undo)

    def hook(self, handle) -> None:
        self._steps.append(handle.remove)

    def attribute(self, owner, name: str, value) -> None:
        previous = getattr(owner, name)
        setattr(owner, name, value)
        self._steps.append(lambda: setattr(owner, name, previous))

    def run(self) -> None:
        while self._steps:
            self._steps.pop()()


_installed: weakref.WeakSet = weakref.WeakSet()  # the VAEs carrying a VaeParallel, against installing twice


class VaeParallel:
    """Splits ``vae``'s decoder (and, with ``encode``, its encoder) by rows over ``group``'s ranks.

    Installing wraps forwards and adds hooks (see the module docstring); :meth:`remove` restores
    the VAE exactly. Every rank of ``group`` must call ``decode`` / ``encode`` together, with the
    same input; each gets the whole output, equal to one process's up to float rounding. A group of
    size 1 installs nothing. Bytes sent go to ``group.stats``. Refusals (unknown VAE or module
    class, an image too small to split over the ranks) raise :class:`DitEngineError`.
    """

    def __init__(self, vae: nn.Module, group: SequenceGroup, *, encode: bool = True):
        problem = vae_parallel_problem(type(vae).__name__)
        if problem:
            raise DitEngineError(problem)
        self.vae, self.group, self.encode = vae, group, encode
        self._undo = _Undo()
        self._inside = False  # True during a split decoder/encoder call: the units act only then
        self.calls_split = 0  # decoder / encoder calls split over the ranks (metrics.json)
        self._noise: dict[int, tuple] = {}  # id(resnet) -> (generator, scales) during its call
        if group.size == 1:
            return
        if vae in _installed:
            raise DitEngineError("parallel.vae: this VAE is already split over ranks; remove() the first VaeParallel")
        roles = [("decoder", vae.decoder)] + ([("encoder", vae.encoder)] if encode else [])
        surveys = []
        for role, root in roles:
            survey = _Survey(type(vae).__name__, role)
            survey.visit_root(root)  # refuses before anything is installed
            surveys.append((root, survey))
        try:
            for root, survey in surveys:
                self._install(root, survey)
            if getattr(vae, "use_tiling", False):  # the split bounds memory already; tiles would only redo it
                self._undo.attribute(vae, "use_tiling", False)
        except BaseException:
            self._undo.run()
            raise
        _installed.add(vae)

    def remove(self) -> None:
        """Restore the VAE as it was before installing (forwards, hooks, tiling flag)."""
        self._undo.run()
        _installed.discard(self.vae)

    # -- installing ------------------------------------------------------------------------------

    def _install(self, root: nn.Module, survey: _Survey) -> None:
        for unit, rows, stride in survey.halo:
            self._undo.forward(unit, self._halo_forward, rows=rows, stride=stride)
        for norm in survey.norms:
            self._undo.forward(norm, self._group_norm_forward, norm=norm)
        for module in survey.whole:
            self._undo.forward(module, self._whole_forward)
        for resnet in survey.noisy:
            self._undo.forward(resnet, self._noisy_forward, resnet=resnet)
            for conv, index in ((resnet.conv1, 0), (resnet.conv2, 1)):
                add = functools.partial(self._add_noise, resnet=resnet, index=index)
                self._undo.hook(conv.register_forward_hook(add))
        enter = functools.partial(self._enter, align=survey.align, need=max(1, survey.most_halo), role=survey.role)
        self._undo.hook(root.register_forward_pre_hook(enter, with_kwargs=True))
        # always_call: a failed call (a refusal included) still ends the split state
        self._undo.hook(root.register_forward_hook(self._leave, always_call=True))

    # -- entering and leaving the decoder / encoder -------------------------------------------------

    def _enter(self, module, args, kwargs, *, align: int, need: int, role: str):
        x, replace = _main_input(args, kwargs)
        sizes = self._split(x.shape[-2], align, need, role)
        start = sum(sizes[: self.group.rank])
        self._inside = True
        self.calls_split += 1
        return replace(x.narrow(-2, start, sizes[self.group.rank]))

    def _leave(self, module, args, output):
        self._inside = False
        if output is None:  # the call raised: nothing to gather
            return None
        if not isinstance(output, torch.Tensor):
            raise DitEngineError(f"parallel.vae: {type(module).__name__} returned {type(output).__name__}, not a "
                                 "tensor of rows to gather; set parallel.vae=false")
        return self._gather_rows(output)[0]

    def _split(self, rows: int, align: int, need: int, role: str) -> list[int]:
        """Every rank's rows: whole blocks of ``align`` rows shared out like ``torch.tensor_split``
        (the remainder rows, fewer than ``align``, go to the last rank, whose own padding handles
        them); each rank needs at least ``need`` blocks for its neighbours' halos."""
        size = self.group.size
        blocks, rest = divmod(rows, align)
        base, extra = divmod(blocks, size)
        per_rank = [base + (1 if r < extra else 0) for r in range(size)]
        if min(per_rank) < need:
            blocks_note = f" in blocks of {align} rows, the {role}'s downsampling" if align > 1 else ""
            raise DitEngineError(
                f"parallel.vae: split over {size} ranks, the {role} input's {rows} rows leave a rank "
                f"{min(per_rank) * align} of the {need * align} rows each rank needs (for its neighbours' halos"
                f"{blocks_note}); use fewer ranks, a larger image, or parallel.vae=false")
        sizes = [n * align for n in per_rank]
        sizes[-1] += rest
        return sizes

    # -- collectives -----------------------------------------------------------------------------

    def _peer(self, group_rank: int) -> int:
        group = self.group.group
        return group_rank if group is None else dist.get_global_rank(group, group_rank)

    def _lengths(self, local: int, device: torch.device) -> list[int]:
        """Every rank's row count of a tensor this rank holds ``local`` rows of."""
        mine = torch.tensor([local], dtype=torch.int64, device=device)
        everyone = [torch.empty_like(mine) for _ in range(self.group.size)]
        with self.group.stats.measure(device, mine.element_size() * (self.group.size - 1)):
            dist.all_gather(everyone, mine, group=self.group.group)
        return [int(t.item()) for t in everyone]

    def _gather_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Every rank's rows of ``x`` concatenated (row counts may differ: gloo has no uneven
        all_gather, so pad to the longest, gather, narrow)."""
        lengths = self._lengths(x.shape[-2], x.device)
        longest = max(lengths)
        padded = x
        if x.shape[-2] < longest:
            pad_shape = (*x.shape[:-2], longest - x.shape[-2], x.shape[-1])
            padded = torch.cat([x, x.new_zeros(pad_shape)], dim=-2)
        padded = padded.contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.group.size)]
        with self.group.stats.measure(x.device, padded.numel() * padded.element_size() * (self.group.size - 1)):
            dist.all_gather(parts, padded, group=self.group.group)
        return torch.cat([p.narrow(-2, 0, n) for p, n in zip(parts, lengths)], dim=-2), lengths

    def _with_halos(self, tensors: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
        """Each tensor with ``rows`` rows of the rank above on top and of the rank below underneath
        (none at the image's true top and bottom), by point-to-point sends to the two neighbours."""
        rank, size = self.group.rank, self.group.size
        ops, received, sent = [], [], 0
        for x in tensors:
            above = below = None
            if rank > 0:
                above = x.new_empty((*x.shape[:-2], rows, x.shape[-1]))
                top = x[..., :rows, :].contiguous()
                ops += [dist.P2POp(dist.isend, top, self._peer(rank - 1), self.group.group),
                        dist.P2POp(dist.irecv, above, self._peer(rank - 1), self.group.group)]
                sent += top.numel() * top.element_size()
            if rank < size - 1:
                below = x.new_empty((*x.shape[:-2], rows, x.shape[-1]))
                bottom = x[..., -rows:, :].contiguous()
                ops += [dist.P2POp(dist.isend, bottom, self._peer(rank + 1), self.group.group),
                        dist.P2POp(dist.irecv, below, self._peer(rank + 1), self.group.group)]
                sent += bottom.numel() * bottom.element_size()
            received.append((above, below))
        with self.group.stats.measure(tensors[0].device, sent):
            for work in dist.batch_isend_irecv(ops):
                work.wait()
        return [torch.cat([t for t in (above, x, below) if t is not None], dim=-2)
                for x, (above, below) in zip(tensors, received)]

    def _all_reduce(self, x: torch.Tensor) -> None:
        size = self.group.size
        # a ring all-reduce sends 2 (n - 1) / n of the tensor from each rank
        with self.group.stats.measure(x.device, 2 * (size - 1) * x.numel() * x.element_size() // size):
            dist.all_reduce(x, group=self.group.group)

    # -- the wrapped forwards ----------------------------------------------------------------------

    def _halo_forward(self, *args, original, rows: int, stride: int, **kwargs):
        """A conv (or pad-then-conv unit) on this rank's rows plus ``rows`` halo rows per interior
        side; the output rows the halos produced are cropped again."""
        if not self._inside:
            return original(*args, **kwargs)
        x, _ = _main_input(args, kwargs)
        local = x.shape[-2]
        if local < rows:  # the entry split makes this impossible; a guard, not a code path
            raise DitEngineError(f"parallel.vae: a rank holds {local} rows where a convolution needs {rows} from it; "
                                 "use fewer ranks or a larger image")
        rank, size = self.group.rank, self.group.size
        if rank < size - 1 and local % stride:
            raise DitEngineError(f"parallel.vae: a chunk of {local} rows meets a stride-{stride} convolution; "
                                 "set parallel.vae=false")
        # tensors passed beside x with its rows (Wan's cached last frames, cache_x) get the halos too
        slots = [(i, a) for i, a in enumerate(args) if _same_rows(a, x)]
        slots += [(k, v) for k, v in kwargs.items() if _same_rows(v, x)]
        extended = self._with_halos([t for _, t in slots], rows)
        new_args, new_kwargs = list(args), dict(kwargs)
        for (where, _), t in zip(slots, extended):
            if isinstance(where, int):
                new_args[where] = t
            else:
                new_kwargs[where] = t
        out = original(*new_args, **new_kwargs)
        top = rows // stride if rank > 0 else 0
        keep = local // stride if rank < size - 1 else out.shape[-2] - top
        return out.narrow(-2, top, keep)

    def _group_norm_forward(self, x: torch.Tensor, *, original, norm: nn.GroupNorm) -> torch.Tensor:
        """``nn.GroupNorm`` with each (sample, group)'s mean and variance over every rank's rows."""
        if not self._inside:
            return original(x)
        batch, channels, groups = x.shape[0], x.shape[1], norm.num_groups
        values = x.float().reshape(batch, groups, -1)
        sums = values.sum(dim=-1).double().reshape(-1)  # float64 across ranks: tiny, and exact counts
        stats = torch.cat([sums, sums.new_tensor([float(values.shape[-1])])])
        self._all_reduce(stats)
        count = stats[-1]
        mean = (stats[:-1] / count).float().reshape(batch, groups, 1)
        centered = values - mean  # two passes: the squared deviations, not E[x^2] - E[x]^2
        squares = centered.square().sum(dim=-1).double()
        self._all_reduce(squares)
        scale = torch.rsqrt(squares / count + norm.eps).float().reshape(batch, groups, 1)
        out = (centered * scale).reshape(x.shape)
        if norm.affine:
            shape = (1, channels) + (1,) * (x.dim() - 2)
            out = out * norm.weight.float().reshape(shape) + norm.bias.float().reshape(shape)
        return out.to(x.dtype)

    def _whole_forward(self, *args, original, **kwargs):
        """A module that mixes all pixels (mid block, attention): gather the rows, run it unchanged on
        the whole image, keep this rank's rows of its output."""
        if not self._inside:
            return original(*args, **kwargs)
        x, replace = _main_input(args, kwargs)
        whole, lengths = self._gather_rows(x)
        whole_args, whole_kwargs = replace(whole)
        out = original(*whole_args, **whole_kwargs)
        if not isinstance(out, torch.Tensor) or out.shape[-2] != whole.shape[-2]:
            raise DitEngineError("parallel.vae: a module run whole changed the image's rows; set parallel.vae=false")
        start = sum(lengths[: self.group.rank])
        return out.narrow(-2, start, lengths[self.group.rank])

    def _noisy_forward(self, *args, original, resnet: nn.Module, **kwargs):
        """LTX's resnet that adds ``randn(H, W) * per_channel_scale`` after each conv: its own draw
        would be this rank's rows only (other numbers from the generator), so it is switched off
        for the call and :meth:`_add_noise` draws the whole image's noise after each conv instead."""
        if not self._inside:
            return original(*args, **kwargs)
        generator = args[2] if len(args) > 2 else kwargs.get("generator")
        scales = (resnet.per_channel_scale1, resnet.per_channel_scale2)
        self._noise[id(resnet)] = (generator, scales)
        resnet.per_channel_scale1 = resnet.per_channel_scale2 = None
        try:
            return original(*args, **kwargs)
        finally:
            resnet.per_channel_scale1, resnet.per_channel_scale2 = scales
            self._noise.pop(id(resnet), None)

    def _add_noise(self, conv, args, output, *, resnet: nn.Module, index: int):
        noise = self._noise.get(id(resnet))
        if noise is None:
            return None
        generator, scales = noise
        lengths = self._lengths(output.shape[-2], output.device)
        # the same draw as one process: the whole image's (H, W) noise, then this rank's rows
        spatial = torch.randn((sum(lengths), output.shape[-1]), generator=generator, device=output.device,
                              dtype=output.dtype)
        spatial = spatial.narrow(0, sum(lengths[: self.group.rank]), lengths[self.group.rank])[None]
        return output + (spatial * scales[index])[None, :, None, ...]


def _same_rows(value, x: torch.Tensor) -> bool:
    """Whether ``value`` is a tensor of ``x``'s batch, channels, rows and columns (any frames)."""
    return (isinstance(value, torch.Tensor) and value.dim() == x.dim() and value.shape[:2] == x.shape[:2]
            and value.shape[-2:] == x.shape[-2:])
