"""Know your data: ``stoker scan`` as functions (sources, checks, the perceptual hash)."""

from stoker.quality.checks import PROBLEMS, analyze, quarantine_entries
from stoker.quality.scan import scan_dataset, scan_markdown

__all__ = ["PROBLEMS", "analyze", "quarantine_entries", "scan_dataset", "scan_markdown"]
