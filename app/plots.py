"""Plotly figures of the app: the gap–ε plane with its Pareto front, E_hull histograms, XRD, PPO curves.

Every axis title carries its unit; every figure uses the same template and colours, so the pages
look like one tool. Functions take plain DataFrames (``app.pool.Pool.scored_frame`` columns) and
return ``plotly.graph_objects.Figure`` objects; they compute nothing scientific beyond what they draw.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.scoring.pareto import iso_fom_curve, pareto_points
from app.pool import numeric

TEMPLATE = "plotly_white"
ISO_FOM_EV = (5.0, 10.0, 20.0)
STABILITY_EV = 0.1                       # eV/atom, the paper's stability threshold
EHULL_COLORSCALE = "RdYlGn_r"            # green = on the hull, red = far above it
ARM_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52")
GAP_LABEL = "Band gap E<sub>g</sub> (eV)"
EPS_LABEL = "ε<sub>elec</sub> (dimensionless)"
EHULL_LABEL = "E<sub>hull</sub> (eV/atom)"
XRD_LABELLED_PEAKS = 8                   # strongest XRD peaks that carry their hkl on the plot


def _layout(fig: go.Figure, height: int, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=40, b=55),
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0), **kw)
    return fig


def _spacegroup(frame: pd.DataFrame) -> np.ndarray:
    found = numeric(frame, "spacegroup_found")
    generated = numeric(frame, "spacegroup")
    return np.where(np.isfinite(found), found, generated)


def plane_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that can be placed on the gap–ε plane (finite E_g and ε_elec), with the plotted columns.

    ``eligible``: the row may stand on the Pareto front (``app.flags.front_eligible``: no hiding flag, not a metal).
    """
    from app.flags import front_eligible

    out = pd.DataFrame({
        "id": numeric(frame, "id"),
        "gap": numeric(frame, "band_gap_ev"),
        "eps": numeric(frame, "eps_elec"),
        "fom": numeric(frame, "fom_ev"),
        "ehull": numeric(frame, "e_above_hull"),
        "sg": _spacegroup(frame),
        "formula": frame["formula"].astype(str).to_numpy() if "formula" in frame else "",
        "gap_std": numeric(frame, "band_gap_ev_std"),     # ± columns (core.scoring.uncertainty), NaN when absent
        "eps_std": numeric(frame, "eps_elec_std"),
        "eligible": front_eligible(frame) if len(frame) else np.zeros(0, dtype=bool),
        "trusted": frame["trusted"].to_numpy(dtype=bool) if "trusted" in frame else np.ones(len(frame), dtype=bool),
    })
    return out[np.isfinite(out["gap"]) & np.isfinite(out["eps"])].reset_index(drop=True)


def _error_bars(values: pd.Series) -> dict | None:
    """Plotly error-bar settings for one axis (±1σ), or None when no point has a σ > 0."""
    sigma = np.nan_to_num(values.to_numpy(dtype=float), nan=0.0)
    if not (sigma > 0).any():
        return None
    return dict(type="data", array=sigma, visible=True, thickness=1, width=0, color="rgba(60,60,60,0.45)")


def _hover(points: pd.DataFrame) -> tuple[np.ndarray, str]:
    custom = np.stack([points["id"], points["formula"], points["sg"], points["fom"], points["ehull"],
                       points["gap"], points["eps"]], axis=1) if len(points) else np.empty((0, 7))
    template = ("<b>%{customdata[1]}</b> (#%{customdata[0]})<br>SG %{customdata[2]}<br>"
                "E<sub>g</sub> %{customdata[5]:.2f} eV · ε %{customdata[6]:.2f}<br>"
                "FoM %{customdata[3]:.2f} eV<br>E<sub>hull</sub> %{customdata[4]:.3f} eV/atom<extra></extra>")
    return custom, template


def _axis_ranges(gap: np.ndarray, eps: np.ndarray) -> tuple[list[float], list[float]]:
    gx = float(np.nanmax(gap)) if gap.size and np.isfinite(gap).any() else 5.0
    ey = float(np.nanmax(eps)) if eps.size and np.isfinite(eps).any() else 5.0
    return [0.0, max(1.0, gx * 1.08)], [0.0, max(1.0, ey * 1.12)]


def _iso_lines(fig: go.Figure, x_range, y_range, levels: Sequence[float]) -> None:
    """One dashed hyperbola ε·E_g = FoM per level; a level outside the axes gets an empty trace, so the
    figure always has the same traces (plot clicks refer to traces by position)."""
    for k, fom in enumerate(levels):
        gap_lo = max(fom / y_range[1], 1e-3)
        gap, eps = iso_fom_curve(fom, gap_lo, x_range[1]) if gap_lo < x_range[1] else (np.array([]), np.array([]))
        fig.add_trace(go.Scatter(x=gap, y=eps, mode="lines", name="iso-FoM ε·E<sub>g</sub> (eV)",
                                 line=dict(color="#888", width=1, dash="dash" if fom == 10 else "dot"),
                                 hoverinfo="skip", showlegend=k == 0, legendgroup="iso"))
        if gap.size:
            fig.add_annotation(x=gap[-1], y=eps[-1], text=f"{fom:g} eV", showarrow=False, xanchor="right",
                               yanchor="bottom", font=dict(size=10, color="#666"))


def _front_trace(points: pd.DataFrame, name: str, color: str) -> go.Scatter | None:
    """The Pareto front among the points that may stand on it (flagged rows and metals never do)."""
    points = points[points["eligible"].to_numpy(dtype=bool)]
    fx, fy, idx = pareto_points(points["gap"].to_numpy(), points["eps"].to_numpy())
    if fx.size == 0:
        return None
    front = points.iloc[idx]
    custom, template = _hover(front)
    return go.Scatter(x=fx, y=fy, mode="lines+markers", line_shape="vh", name=name,
                      line=dict(color=color, width=2),
                      marker=dict(size=12, color="rgba(0,0,0,0)", line=dict(color=color, width=2)),
                      customdata=custom, hovertemplate=template)


def pareto_figure(frame: pd.DataFrame, *, ehull_max: float = 0.4, selected_id: int | None = None,
                  height: int = 560) -> go.Figure:
    """Band gap (x, eV) vs ε_elec (y) of scored structures, coloured by E_hull (eV/atom).

    Shows the Pareto front of (E_g, ε_elec), iso-FoM hyperbolas at 5, 10 and 20 eV and, when given,
    the selected structure as a star. Each point's ``customdata[0]`` is its pool id (for clicks).
    When the frame has ``band_gap_ev_std`` / ``eps_elec_std`` (``core.scoring.uncertainty``), points get
    ±1σ error bars.
    """
    points = plane_points(frame)
    x_range, y_range = _axis_ranges(points["gap"].to_numpy(), points["eps"].to_numpy())
    fig = go.Figure()
    _iso_lines(fig, x_range, y_range, ISO_FOM_EV)
    has_e = np.isfinite(points["ehull"].to_numpy())
    # always the same traces in the same order (clicks refer to traces by position):
    # iso lines, structures, structures without E_hull, Pareto front, selected
    for mask, name in ((has_e, "structures"), (~has_e, "no E<sub>hull</sub>")):
        sub = points[mask]
        custom, template = _hover(sub)
        # a flagged row (shown only on request) is a cross: its numbers are not judged by the reference
        marker = dict(size=9, line=dict(width=0.5, color="#333"),
                      symbol=np.where(sub["trusted"].to_numpy(dtype=bool), "circle", "x").tolist())
        if name == "structures":
            marker.update(color=sub["ehull"], colorscale=EHULL_COLORSCALE, cmin=0.0, cmax=ehull_max,
                          colorbar=dict(title=dict(text=EHULL_LABEL, side="right"), thickness=14))
        else:
            marker.update(color="#bbb")
        fig.add_trace(go.Scatter(x=sub["gap"], y=sub["eps"], mode="markers", name=name, marker=marker,
                                 customdata=custom, hovertemplate=template, showlegend=bool(len(sub)),
                                 error_x=_error_bars(sub["gap_std"]), error_y=_error_bars(sub["eps_std"])))
    front = _front_trace(points, "Pareto front", "#1f2d5c")
    fig.add_trace(front if front is not None else go.Scatter(x=[], y=[], name="Pareto front", showlegend=False))
    chosen = points[points["id"] == selected_id] if selected_id is not None else points.iloc[:0]
    fig.add_trace(go.Scatter(x=chosen["gap"], y=chosen["eps"], mode="markers", name="selected",
                             marker=dict(symbol="star", size=20, color="#ffd400", line=dict(color="#000", width=1.5)),
                             hoverinfo="skip", showlegend=bool(len(chosen))))
    fig.update_xaxes(title=GAP_LABEL, range=x_range, zeroline=False)
    fig.update_yaxes(title=EPS_LABEL, range=y_range, zeroline=False)
    _layout(fig, height, clickmode="event+select", dragmode="zoom")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.14, xanchor="left", x=0),
                      margin=dict(t=20, b=90))
    return fig


def compare_plane_figure(frames: Mapping[str, pd.DataFrame], height: int = 520) -> go.Figure:
    """Two (or more) samples on the gap–ε plane, each with its own Pareto front (the paper's Fig. 6a)."""
    all_points = {name: plane_points(f) for name, f in frames.items()}
    stacked = pd.concat(all_points.values()) if all_points else pd.DataFrame(columns=["gap", "eps"])
    x_range, y_range = _axis_ranges(stacked["gap"].to_numpy(), stacked["eps"].to_numpy())
    fig = go.Figure()
    _iso_lines(fig, x_range, y_range, (10.0,))
    for k, (name, points) in enumerate(all_points.items()):
        color = ARM_COLORS[k % len(ARM_COLORS)]
        custom, template = _hover(points)
        fig.add_trace(go.Scatter(x=points["gap"], y=points["eps"], mode="markers", name=name,
                                 marker=dict(size=7, color=color, opacity=0.6), customdata=custom,
                                 hovertemplate=template, legendgroup=name))
        front = _front_trace(points, f"{name} Pareto front", color)
        if front is not None:
            front.legendgroup = name
            fig.add_trace(front)
    fig.update_xaxes(title=GAP_LABEL, range=x_range)
    fig.update_yaxes(title=EPS_LABEL, range=y_range)
    return _layout(fig, height)


def ehull_histogram(frames: Mapping[str, pd.DataFrame], *, x_max: float = 0.4, bin_width: float = 0.02,
                    threshold: float = STABILITY_EV, height: int = 380) -> go.Figure:
    """Overlaid E_hull histograms (fraction of each sample) with the stability line (the paper's Fig. 3 / 6b).

    Values above ``x_max`` (eV/atom) are counted in the last bin, so every structure with an E_hull
    is in the histogram.
    """
    fig = go.Figure()
    lo = 0.0
    for frame in frames.values():
        e = numeric(frame, "e_above_hull")
        if np.isfinite(e).any():
            lo = min(lo, float(np.floor(np.nanmin(e) / bin_width) * bin_width))
    for k, (name, frame) in enumerate(frames.items()):
        e = numeric(frame, "e_above_hull")
        e = np.clip(e[np.isfinite(e)], lo, x_max - 1e-9)
        fig.add_trace(go.Histogram(x=e, name=f"{name} (n = {e.size})", histnorm="probability", opacity=0.6,
                                   xbins=dict(start=lo, end=x_max, size=bin_width),
                                   marker_color=ARM_COLORS[k % len(ARM_COLORS)]))
    fig.add_vline(x=threshold, line=dict(color="#d62728", dash="dash", width=2),
                  annotation_text=f"{threshold:g} eV/atom", annotation_position="top right")
    ticks = np.round(np.arange(math.ceil(lo / 0.1) * 0.1, x_max + 1e-9, 0.1), 3)
    labels = [f"{t:g}" for t in ticks]
    if len(labels) and ticks[-1] == round(x_max, 3):
        labels[-1] = f"≥ {x_max:g}"                       # the last bin holds everything above x_max
    fig.update_xaxes(title=EHULL_LABEL, range=[lo, x_max], tickvals=ticks, ticktext=labels)
    fig.update_yaxes(title="Fraction of structures")
    return _layout(fig, height, barmode="overlay")


def xrd_figure(pattern: pd.DataFrame, wavelength_label: str = "Cu Kα", height: int = 300) -> go.Figure:
    """Stick pattern: 2θ (degrees) vs intensity (normalised to 100), hover with hkl."""
    two_theta = pattern["two_theta"].to_numpy(float)
    intensity = pattern["intensity"].to_numpy(float)
    hkl = pattern["hkl"].astype(str).to_numpy() if "hkl" in pattern else np.full(len(pattern), "")
    xs, ys = [], []
    for t, i in zip(two_theta, intensity):
        xs += [t, t, None]
        ys += [0.0, i, None]
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#1f2d5c", width=1.5), hoverinfo="skip",
                               showlegend=False))
    fig.add_trace(go.Scatter(x=two_theta, y=intensity, mode="markers", marker=dict(size=4, color="#1f2d5c"),
                             customdata=hkl, hovertemplate="2θ %{x:.2f}°<br>I %{y:.1f}<br>hkl %{customdata}<extra></extra>",
                             showlegend=False))
    for k in np.argsort(-intensity)[:XRD_LABELLED_PEAKS]:   # hkl over the strongest peaks
        if intensity[k] >= 5.0 and hkl[k]:
            fig.add_annotation(x=two_theta[k], y=intensity[k], text=str(hkl[k]).split(",")[0], showarrow=False,
                               yanchor="bottom", font=dict(size=10, color="#444"))
    fig.update_xaxes(title=f"2θ (degrees, {wavelength_label})")
    fig.update_yaxes(title="Intensity (normalised)", rangemode="tozero", range=[0, 115])
    return _layout(fig, height)


PPO_PANELS = (("reward_mean", "Mean reward r"), ("kl", "KL(p<sub>θ</sub> ‖ p<sub>base</sub>), sample estimate (nats)"),
              ("e_hull_mean", "Mean E<sub>hull</sub> (eV/atom)"), ("fom_mean", "Mean FoM (eV)"),
              ("valid_fraction", "Buildable fraction"))


def ppo_figure(history: Sequence[Mapping], height: int | None = None) -> go.Figure:
    """Per-step PPO curves: reward, KL to the base model, E_hull or FoM, fraction of buildable samples.

    Two panels per row; ``height`` in px, by default 155 per row plus 150 (460 for four panels). The
    steps are whole numbers, "PPO step" labels only the bottom panel of each column (so a panel's
    title never meets the axis title above it), and the buildable fraction runs from 0 to 1.
    """
    frame = pd.DataFrame(list(history))
    panels = [(k, t) for k, t in PPO_PANELS if k in frame and frame[k].notna().any()] or list(PPO_PANELS[:2])
    cols = 2
    rows = (len(panels) + 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t in panels],
                        vertical_spacing=min(0.3, 0.45 / rows), horizontal_spacing=0.1)
    x = frame["step"] if "step" in frame else pd.Series(range(1, len(frame) + 1))
    every = max(1, math.ceil(len(x) / 8))
    for k, (key, _) in enumerate(panels):
        r, c = k // cols + 1, k % cols + 1
        y = frame[key] if key in frame else []
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", showlegend=False, cliponaxis=False,
                                 line=dict(color=ARM_COLORS[k % len(ARM_COLORS)])), row=r, col=c)
        fig.update_xaxes(tickmode="linear", tick0=1, dtick=every, tickformat="d", row=r, col=c,
                         title_text="PPO step" if k + cols >= len(panels) else None)
        if key == "valid_fraction":
            fig.update_yaxes(range=[0, 1], dtick=0.25, row=r, col=c)
    for annotation in fig.layout.annotations:   # the panel titles, a little smaller than the page text
        annotation.font.size = 13
    return _layout(fig, height or 150 + 155 * rows)


def temperature_figure(frame: pd.DataFrame, height: int = 340) -> go.Figure:
    """log p (nats) of samples drawn at several temperatures (one box per temperature)."""
    fig = go.Figure()
    for k, (t, sub) in enumerate(frame.groupby("temperature")):
        fig.add_trace(go.Box(y=sub["logp"], name=f"T = {t:g}", boxpoints="all", jitter=0.4, pointpos=0,
                             marker=dict(size=4), line=dict(color=ARM_COLORS[k % len(ARM_COLORS)])))
    fig.update_yaxes(title="log p under the model (nats)")
    fig.update_xaxes(title="Sampling temperature")
    return _layout(fig, height, showlegend=False)


def token_probability_figure(options: pd.DataFrame, chosen: str, title: str, height: int = 280) -> go.Figure:
    """Bar chart of the model's top choices at one decoding step; the chosen token highlighted."""
    colors = ["#DD8452" if str(t) == str(chosen) else "#4C72B0" for t in options["token"]]
    fig = go.Figure(go.Bar(x=options["token"].astype(str), y=options["probability"], marker_color=colors,
                           hovertemplate="%{x}: p = %{y:.3f}<extra></extra>"))
    fig.update_yaxes(title="Probability", range=[0, 1])
    fig.update_xaxes(title=title, type="category")
    return _layout(fig, height)
