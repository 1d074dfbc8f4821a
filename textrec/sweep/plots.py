"""The study's pictures in one self-contained HTML page: optimisation history, parameter importances,
parallel coordinates and the per-epoch curves the pruner saw.

plotly.js is embedded once in the page, so it opens offline (and as an MLflow artifact) with no CDN.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path

from textrec.io import atomic_write

PLOTS = (
    ("Optimisation history", "plot_optimization_history"),
    ("Parameter importances", "plot_param_importances"),
    ("Parallel coordinates", "plot_parallel_coordinate"),
    ("Per-epoch validation (what the pruner saw)", "plot_intermediate_values"),
)


def figures(study, metric: str) -> list[tuple[str, object | None, str]]:
    """(title, plotly figure or None, why there is none) for each of :data:`PLOTS`."""
    import optuna
    import optuna.visualization as vis
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out: list[tuple[str, object | None, str]] = []
    for title, name in PLOTS:
        if name == "plot_param_importances" and len(complete) < 2:
            out.append((title, None, "needs at least two complete trials"))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                kwargs = {} if name == "plot_intermediate_values" else {"target_name": metric}
                fig = getattr(vis, name)(study, **kwargs)
        except Exception as e:  # noqa: BLE001  (one plot that cannot be drawn must not cost the others)
            out.append((title, None, f"{type(e).__name__}: {e}"))
            continue
        out.append((title, fig, ""))
    return out


def write_plots(study, path: str | os.PathLike, metric: str = "val_cer") -> Path | None:
    """Write the page; None when the study has no finished trial to draw (or plotly is missing)."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        return None
    if not study.get_trials(deepcopy=False):
        return None
    parts, embedded = [], False
    for title, fig, why in figures(study, metric):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if fig is None:
            parts.append(f"<p><em>not drawn: {html.escape(why)}</em></p>")
            continue
        parts.append(fig.to_html(full_html=False, include_plotlyjs=not embedded))  # type: ignore[attr-defined]
        embedded = True
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Sweep {html.escape(study.study_name)}</title></head><body>"
            f"<h1>Sweep {html.escape(study.study_name)}: {html.escape(metric)}</h1>{''.join(parts)}</body></html>")
    out = Path(path)
    atomic_write(out, page.encode())
    return out
