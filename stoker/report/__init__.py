"""The Data Pipeline Summary: sections built from a live DataModule, Markdown, plots and sample grids."""

from stoker.report.markdown import report_markdown
from stoker.report.summary import build_report, write_plots

__all__ = ["build_report", "report_markdown", "write_plots"]
