"""``stoker compare A B``: what changed between two runs, and by how much.

``A`` and ``B`` are run summaries (``stoker_summary.json``, written into every fit's log directory by
:class:`stoker.callbacks.StarvationMonitor`) or folders holding one (the newest below it is taken).
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker compare``."""
    parser = argparse.ArgumentParser(prog="stoker compare", description="Compare the settings and the measured "
                                     "figures of two runs (their stoker_summary.json files or log folders).")
    parser.add_argument("a", help="the first run: a stoker_summary.json or a folder holding one")
    parser.add_argument("b", help="the second run")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return parser


def main(argv: list[str]) -> int:
    """Run ``stoker compare``; returns 2 when a summary cannot be read."""
    args = build_parser().parse_args(argv)
    # stoker.profiling imports torch on the way; `stoker compare --help` answers without it.
    from stoker.profiling.run_summary import compare_runs, format_comparison, read_run_summary

    try:
        result = compare_runs(read_run_summary(args.a), read_run_summary(args.b))
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"stoker compare: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str) if args.json else format_comparison(result, (args.a, args.b)))
    return 0
