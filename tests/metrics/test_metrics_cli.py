"""``python -m dit_engine.metrics A B``: per-file PSNR/SSIM/MAE of two image folders."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dit_engine.metrics.__main__ import main as metrics_main


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """``a`` (reference) and ``b``: one identical file, one perturbed file in a subfolder, one file each side only."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    perturbed = image.copy()
    perturbed[::3, ::3, 1] ^= 32  # a sparse, exactly known change
    a, b = tmp_path / "a", tmp_path / "b"
    save(a / "same.png", image)
    save(b / "same.png", image)
    save(a / "sub" / "pert.png", image)
    save(b / "sub" / "pert.png", perturbed)
    save(a / "only_a.png", image)
    save(b / "only_b.png", image)
    return a, b, image, perturbed


def expected_scores(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and MAE of two 8-bit images scaled to [0, 1]."""
    difference = reference.astype(np.float64) / 255 - image.astype(np.float64) / 255
    return 10 * math.log10(1 / np.mean(difference ** 2)), float(np.mean(np.abs(difference)))


def test_table_lists_each_file_and_the_mean(folders, capsys) -> None:
    a, b, image, perturbed = folders
    metrics_main([str(a), str(b)])
    captured = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in captured.out.splitlines() if line and not line.startswith("-")}
    assert rows["file"][:2] == ["file", "PSNR"]
    assert rows["same.png"][1:] == ["inf", "1.0000", "0.000000"]
    psnr, mae = expected_scores(image, perturbed)
    pert = rows["sub/pert.png"]
    assert float(pert[1]) == pytest.approx(psnr, abs=0.01)
    assert 0.0 < float(pert[2]) < 1.0
    assert float(pert[3]) == pytest.approx(mae, abs=1e-6)
    mean = rows["mean"]
    assert float(mean[1]) == pytest.approx(psnr, abs=0.01)  # identical files are left out of the mean PSNR
    assert float(mean[2]) == pytest.approx((1.0 + float(pert[2])) / 2, abs=1e-4)
    assert float(mean[3]) == pytest.approx(mae / 2, abs=1e-6)
    # Unmatched files: one warning line naming both, on stderr.
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("dit_engine: warning:")
    assert "only_a.png" in warnings[0] and "only_b.png" in warnings[0]


def test_json_output(folders) -> None:
    a, b, image, perturbed = folders
    result = subprocess.run([sys.executable, "-m", "dit_engine.metrics", str(a), str(b), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    files = {entry["name"]: entry for entry in data["files"]}
    assert set(files) == {"same.png", "sub/pert.png"}
    assert files["same.png"] == {"name": "same.png", "psnr": None, "ssim": 1.0, "mae": 0.0, "identical": True}
    psnr, mae = expected_scores(image, perturbed)
    assert files["sub/pert.png"]["psnr"] == pytest.approx(psnr, abs=1e-3)
    assert files["sub/pert.png"]["mae"] == pytest.approx(mae, abs=1e-6)
    assert files["sub/pert.png"]["identical"] is False
    assert data["mean"]["psnr"] == pytest.approx(psnr, abs=1e-3)
    assert data["mean"]["identical"] == 1 and data["mean"]["images"] == 2
    assert data["only_in_reference"] == ["only_a.png"] and data["only_in_images"] == ["only_b.png"]
    assert "warning" in result.stderr and "Traceback" not in result.stderr


def assert_one_line_error(capsys, argv: list[str], expected: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        metrics_main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dit_engine: error: ") and expected in lines[0], lines[0]


def test_size_mismatch_is_one_line_error(folders, capsys) -> None:
    a, b, image, _ = folders
    save(b / "same.png", np.zeros((12, 24, 3), dtype=np.uint8))
    assert_one_line_error(capsys, [str(a), str(b)], "same.png is 24x12")


def test_no_common_files_is_one_line_error(tmp_path: Path, capsys) -> None:
    save(tmp_path / "a" / "x.png", np.zeros((4, 4, 3), dtype=np.uint8))
    save(tmp_path / "b" / "y.png", np.zeros((4, 4, 3), dtype=np.uint8))
    assert_one_line_error(capsys, [str(tmp_path / "a"), str(tmp_path / "b")], "no image files in common")


def test_missing_folder_and_missing_argument_are_one_line_errors(folders, capsys) -> None:
    a, _, _, _ = folders
    assert_one_line_error(capsys, [str(a), str(a.parent / "nope")], "does not exist")
    assert_one_line_error(capsys, [str(a)], "required")
