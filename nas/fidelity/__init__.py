"""Fidelity studies: how well a proxy protocol ranks architectures against a much longer reference training.

``run_study`` samples architectures of a space (stratified over layouts), trains each under every proxy
protocol and the reference (on Ray, resumable), and computes zero-cost proxies; ``write_report`` gives
Kendall tau, Spearman rho and top-10% overlap with bootstrap intervals, the reference's seed-to-seed noise
ceiling, per-layout reference figures, a scatter plot and markdown. ``nas-fidelity`` wraps both.
"""

from nas.fidelity.config import Protocol, Study, StudySettings, load_study, study_from_dict
from nas.fidelity.plan import plan_jobs, sample_architectures
from nas.fidelity.report import analyse, format_tables, format_tables_of, write_report
from nas.fidelity.runner import run_study
from nas.fidelity.stats import agreement, bootstrap_ci, kendall_tau, spearman_rho, top_overlap
from nas.fidelity.studydir import StudyDir

__all__ = [
    "Protocol",
    "Study",
    "StudySettings",
    "load_study",
    "study_from_dict",
    "analyse",
    "format_tables",
    "format_tables_of",
    "write_report",
    "StudyDir",
    "plan_jobs",
    "run_study",
    "sample_architectures",
    "agreement",
    "bootstrap_ci",
    "kendall_tau",
    "spearman_rho",
    "top_overlap",
]
