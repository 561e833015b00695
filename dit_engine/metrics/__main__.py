"""``python -m dit_engine.metrics REFERENCE_DIR IMAGES_DIR [--json]``: compare two image folders.

Files are matched by their path relative to each folder (PNG and JPEG, searched recursively), so
two run directories' ``images/`` folders compare directly. Prints PSNR (dB), SSIM and MAE per
file and their mean as an aligned table, or as JSON with ``--json`` (identical images have PSNR
``inf`` in the table and ``null`` in JSON, as in ``metrics.json``). Files present on one side
only are named in a warning line on stderr. Bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dit_engine.console import OneLineArgumentParser, fail
from dit_engine.metrics.quality import ImageScores, compare_images, summarize

#: File suffixes compared (lower case); others in the folders are ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
USAGE = "python -m dit_engine.metrics REFERENCE_DIR IMAGES_DIR [--json]"



def find_images(root: Path) -> dict[str, Path]:
    """Image files under ``root`` keyed by their relative POSIX path (``sub/a.png``)."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    }


def compare_folders(reference_dir: Path, images_dir: Path) -> tuple[list[ImageScores], list[str], list[str]]:
    """Scores of every file in both folders, and the names found only in the first / only in the second.

    Raises ``ValueError`` with a one-line message when nothing can be compared or two matched
    files differ in size or cannot be read.
    """
    for role, folder in (("reference", reference_dir), ("images", images_dir)):
        if not folder.is_dir():
            raise ValueError(f"{role} folder {folder} does not exist or is not a directory; pass two image folders, e.g. two runs' images/")
    references, images = find_images(reference_dir), find_images(images_dir)
    common = sorted(set(references) & set(images))
    if not common:
        raise ValueError(
            f"no image files in common: {reference_dir} has {len(references)} and {images_dir} has {len(images)} "
            "PNG/JPEG files, matched by relative path; point both arguments at folders laid out alike (e.g. two runs' images/)"
        )
    scores = []
    for name in common:
        reference, image = _open(references[name]), _open(images[name])
        if reference.size != image.size:
            raise ValueError(
                f"{name} is {image.size[0]}x{image.size[1]} in {images_dir} but {reference.size[0]}x{reference.size[1]} "
                f"in {reference_dir}; compare images generated at the same size"
            )
        # One pair at a time: files of different sizes may sit side by side in a folder.
        scores += compare_images([name], [reference], [image])
    only_reference = sorted(set(references) - set(images))
    only_images = sorted(set(images) - set(references))
    return scores, only_reference, only_images


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image ({err}); remove it or replace it with a valid PNG/JPEG") from None


def format_table(scores: list[ImageScores]) -> str:
    """Per-file scores, then the mean, as a plain aligned text table."""
    summary = summarize(scores)
    rows = [(s.name, _psnr(s.psnr), f"{s.ssim:.4f}", f"{s.mae:.6f}") for s in scores]
    rows.append(("mean", _psnr(summary["psnr"]), f"{summary['ssim']:.4f}", f"{summary['mae']:.6f}"))
    header = ("file", "PSNR (dB)", "SSIM", "MAE")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])

    lines = [line(header), *(line(row) for row in rows[:-1]), "-" * len(line(header)), line(rows[-1])]
    footer = f"{summary['images']} files, {summary['identical']} identical; worst PSNR {_psnr(summary['psnr_min'])} dB"
    differing = summary["images"] - summary["identical"]
    if summary["identical"] and differing:
        # summarize() leaves identical (infinite) PSNRs out of the mean; say so next to the number.
        footer += f"; mean PSNR is over the {differing} that differ"
    return "\n".join([*lines, footer]) + "\n"


def to_json(scores: list[ImageScores], reference_dir: Path, images_dir: Path, only_reference: list[str], only_images: list[str]) -> str:
    """The comparison as JSON (PSNR ``null`` = identical, as in ``metrics.json``)."""
    summary = summarize(scores)
    files = [dict(s.as_dict(), psnr=_finite(s.psnr), identical=s.psnr == math.inf) for s in scores]
    mean = {key: _finite(value) if isinstance(value, float) else value for key, value in summary.items()}
    data = {
        "reference": str(reference_dir),
        "images": str(images_dir),
        "files": files,
        "mean": mean,
        "only_in_reference": only_reference,
        "only_in_images": only_images,
    }
    return json.dumps(data, indent=2, allow_nan=False)


def _psnr(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.2f}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _unmatched_warning(reference_dir: Path, images_dir: Path, only_reference: list[str], only_images: list[str]) -> str | None:
    def listing(names: list[str]) -> str:
        shown = ", ".join(names[:5])
        return shown + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")

    parts = [f"{len(names)} only in {folder} ({listing(names)})"
             for names, folder in ((only_reference, reference_dir), (only_images, images_dir)) if names]
    return f"dit_engine: warning: unmatched files skipped: {'; '.join(parts)}" if parts else None


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    parser = OneLineArgumentParser(
        usage_line=USAGE,
        prog="python -m dit_engine.metrics",
        description="PSNR, SSIM and MAE of the images in IMAGES_DIR against the same-named images in REFERENCE_DIR.",
    )
    parser.add_argument("reference_dir", metavar="REFERENCE_DIR", type=Path,
                        help="folder of reference images (PNG/JPEG, searched recursively)")
    parser.add_argument("images_dir", metavar="IMAGES_DIR", type=Path,
                        help="folder of images to score, matched to the reference by relative path")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table (PSNR null = identical)")
    args = parser.parse_args(argv)
    try:
        scores, only_reference, only_images = compare_folders(args.reference_dir, args.images_dir)
    except ValueError as err:
        fail(str(err))
    warning = _unmatched_warning(args.reference_dir, args.images_dir, only_reference, only_images)
    if warning:
        print(warning, file=sys.stderr)
    if args.json:
        print(to_json(scores, args.reference_dir, args.images_dir, only_reference, only_images))
    else:
        print(format_table(scores), end="")


if __name__ == "__main__":
    main()
