"""``python -m dit_engine.report <sweep dir>``: (re)write a sweep's summary.csv, summary.md and pareto.png.

Prints the three paths and the Markdown table. Bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations


from dit_engine.console import OneLineArgumentParser, fail
from dit_engine.report.sweep import SweepReportError, collect_cells, markdown_table, write_report_files



def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    parser = OneLineArgumentParser(
        usage_line="python -m dit_engine.report <sweep dir>",
        prog="python -m dit_engine.report",
        description="Write summary.csv, summary.md, pareto.png (speedup vs PSNR) and summary.html (with each cell's "
                    "contact sheet and compute strip) into a sweep directory.",
    )
    parser.add_argument("sweep_dir", help="a directory written by `python -m dit_engine -m ...`, e.g. outputs/sweeps/<date>/<time>")
    args = parser.parse_args(argv)
    try:
        cells = collect_cells(args.sweep_dir)
        paths = write_report_files(args.sweep_dir, cells)
    except SweepReportError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write the report into {args.sweep_dir}: {err.strerror or err}; check that the directory is writable")
    for path in paths.values():
        print(path)
    print()
    print(markdown_table(cells), end="")


if __name__ == "__main__":
    main()
