"""``squeezelab report RESULTS... -o DIR``: study results as one self-contained HTML page
(report.html) and its Markdown twin (report.md, the plots as PNG files beside it)."""
from __future__ import annotations

import argparse

from squeezelab.cli import DefaultsHelpFormatter

#: the library's DEFAULT_THRESHOLD_POINTS, written here so that building the parser does not
#: import the report (matplotlib) for every command; a test keeps the two equal
THRESHOLD_HELP_POINTS = 5.0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="study results as one HTML page and its Markdown twin",
                       formatter_class=DefaultsHelpFormatter,
                       description="Write DIR/report.html (one self-contained page: plots "
                       "embedded, nothing fetched from outside) and DIR/report.md (its plots as "
                       "PNG files beside it) for the studies whose results are given: each "
                       "study's source, the published figures beside ours with the difference "
                       "(marked beyond --threshold), the tables and plots its recipe's report: "
                       "asks for, and every cell's status and provenance.")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="a results JSON that squeezelab study wrote, or a study's --out folder "
                   "(a folder of several: every results.json below it)")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="the folder report.html, report.md and the plots go to")
    p.add_argument("--threshold", type=float, default=None, metavar="POINTS",
                   help="mark ours where it differs from a published figure by more than this "
                   f"many percentage points (unset: {THRESHOLD_HELP_POINTS:g})")
    p.add_argument("--costs-from", action="append", default=[], metavar="DIR",
                   help="cell records of another run of the same studies (a study's --out "
                   "folder, or a folder of several, as benchmarks/study_working_day.py's --keep "
                   "copy): where a recorded cell has wall time only, the cost table counts the "
                   "CPU time of the same cell (same recipe, budget, name and settings) from "
                   "these; repeatable")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from squeezelab.workflows.report import write_report

    options = {} if args.threshold is None else {"threshold": args.threshold}
    files = write_report(args.results, args.out, costs_from=args.costs_from, **options)
    for title in files.studies:
        print(f"study: {title}")
    print(f"html: {files.html}")
    print(f"markdown: {files.markdown} ({len(files.figures)} plots beside it)")
    return 0
