"""The reports the jobs write, in one place: what an evaluation writes (``reports.evaluation``: eval.json,
eval.md, eval.png), the summary the training job ends with (``reports.summary``) and the context sweep's
tables and plots (``reports.sweep``). They read results (plain dicts) and write files through a
``RunDir``; none of them evaluates or trains.
"""

from experiments.reports.evaluation import markdown_table, write_reports
from experiments.reports.summary import summary_table
from experiments.reports.sweep import compare, label, write_tables

__all__ = ["compare", "label", "markdown_table", "summary_table", "write_reports", "write_tables"]
