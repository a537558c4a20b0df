"""Know your data: ``stoker scan`` as functions (sources, checks, the perceptual hash, the near-duplicate index)."""

from stoker.quality.checks import PROBLEMS, analyze, quarantine_entries
from stoker.quality.near_index import near_pairs
from stoker.quality.scan import scan_dataset, scan_markdown

__all__ = ["PROBLEMS", "analyze", "near_pairs", "quarantine_entries", "scan_dataset", "scan_markdown"]
