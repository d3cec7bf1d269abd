"""Studies: a declared grid of training runs (models x options x data x seeds), run as
ordinary :func:`shiftwise.train` runs into one directory, resumable, then summarised over
seeds (mean, std, 95% interval) in tables and plots. ``shiftwise study`` on the command line.

    from shiftwise.study import load_grid, run_study, write_report
    grid = load_grid("quick")            # or "papers", "budgets", "ablations", a TOML file
    results = run_study(grid, "studies/quick")     # runs in studies/quick/runs (store=...)
    write_report(Path("studies/quick"), grid, results)
"""

from shiftwise.study.aggregate import summary_rows
from shiftwise.study.check import EntryPlan, check_grid
from shiftwise.study.estimate import Estimate, estimate_grid
from shiftwise.study.grid import Entry, Grid, MatchTime, load_grid, matched_epochs, parse_grid
from shiftwise.study.report import write_report
from shiftwise.study.runner import Progress, load_results, run_study
from shiftwise.study.stats import Summary, seeds_to_separate, summarize, t_quantile_975

__all__ = [
    "Entry",
    "EntryPlan",
    "Estimate",
    "Grid",
    "MatchTime",
    "Progress",
    "Summary",
    "check_grid",
    "estimate_grid",
    "load_grid",
    "load_results",
    "matched_epochs",
    "parse_grid",
    "run_study",
    "seeds_to_separate",
    "summarize",
    "summary_rows",
    "t_quantile_975",
    "write_report",
]
