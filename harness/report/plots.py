"""PNG plots of a run's results: codebooks, error against block size, throughput, sampled accuracy.

Why pictures next to the tables: a table says NF4's MSE is 0.0094 at block 64; a plot shows at once how
each implementation's error grows with the block size, where a codebook spends its levels against the
distribution it quantizes, and whether two accuracy intervals overlap.

Every figure is a :class:`matplotlib.figure.Figure` drawn with Agg and never registered with pyplot, so no
global state leaks between calls or into a user's session. The ``*_figure`` builders return the Figure (or
None when there is nothing to draw) so tests can inspect what is drawn; :func:`write_plots` saves them.
Output is deterministic: inputs are sorted, colours are assigned from sorted implementation names, and PNGs
are written without the "Software" text chunk, so the same results give the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from harness.errors import InvalidArgument
from harness.formats import codebook
from harness.formats.af4 import normalized_value_pdf
from harness.results.records import Result

__all__ = [
    "DPI",
    "ERROR_METRICS",
    "accuracy_figure",
    "codebooks_figure",
    "default_codebooks",
    "error_vs_block_size_figure",
    "throughput_figure",
    "write_plots",
]

DPI = 120
ERROR_METRICS = ("mse", "mae", "sqnr_db")
"""Metrics drawn against block size, in subplot order (the ones the error-statistics suite records)."""

DENSITY_BLOCK_SIZE = 64
_CASE_BLOCK = re.compile(r"^(?:(?P<data>.*?)-)?block(?P<block>\d+)$")  # "gauss-block64" -> ("gauss", 64)

_MAX_BARS_PER_PANEL = 24
_LOG_SPAN = 20.0
_METRIC_NAMES = {
    "kernel_over_copy": "time / copy time",
    "over_dense": "time / dense F.linear time",
    "mse": "MSE",
    "mae": "MAE",
    "sqnr_db": "SQNR",
    "gbps": "throughput",
    "coqa_f1": "CoQA F1",
    "coqa_em": "CoQA exact match",
    "kld_mean": "mean KL divergence",
    "top1_agreement": "top-1 agreement",
}
# Units for metrics that are recorded without one (error statistics are in the weight's own units).
_DEFAULT_UNITS = {
    "mse": "weight units²",
    "mae": "weight units",
    "sqnr_db": "dB",
    "kernel_over_copy": "×",
    "over_dense": "×",
}
# Known metrics come first in this order (the headline metric first); others follow sorted by name.
_METRIC_ORDER = ("gbps", "kernel_over_copy", "over_dense", "coqa_f1", "coqa_em", "kld_mean", "top1_agreement")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", ":", "-.")


def default_codebooks() -> dict[str, tuple[float, ...]]:
    """NF4, FP4, AF4 (block 64) and int4 levels from :mod:`harness.formats`, in code order."""
    return {name.upper(): tuple(codebook(name, DENSITY_BLOCK_SIZE).tolist()) for name in ("nf4", "fp4", "af4", "int4")}


def write_plots(
    results: Sequence[Result], directory: Path, *, codebooks: Mapping[str, Sequence[float]] | None = None
) -> list[Path]:
    """Write the PNGs for which there is data into ``directory`` (created if missing); return their paths.

    ``codebooks.png`` shows ``codebooks`` (name -> levels), by default :func:`default_codebooks`; pass an
    empty mapping to leave it out. The others come from ``results``: error statistics on ``*-block<N>``
    cases, ``timing`` results and ``sampled`` results.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidArgument(
            f"directory={str(directory)!r} cannot be created ({error.strerror or error}), expected a writable folder"
        ) from None
    figures = {
        "codebooks.png": codebooks_figure(default_codebooks() if codebooks is None else codebooks),
        "error_vs_block_size.png": error_vs_block_size_figure(results),
        "throughput.png": throughput_figure(results),
        "accuracy.png": accuracy_figure(results),
    }
    written = []
    for filename, figure in figures.items():
        if figure is None:
            continue
        path = directory / filename
        # No "Software" chunk (it names the matplotlib version) and no date: same input, same bytes.
        try:
            figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
        except OSError as error:
            raise InvalidArgument(
                f"{filename} in directory={str(directory)!r} cannot be written ({error.strerror or error}), "
                "expected a writable folder"
            ) from None
        figure.clear()  # not registered with pyplot, so nothing to close; drop the artists now
        written.append(path)
    return written


# --- codebooks -----------------------------------------------------------------------------------------


def _check_levels(name: str, levels: Sequence[float]) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in levels], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument(f"codebooks[{name!r}]={levels!r}, expected a sequence of numbers") from None
    if array.size == 0 or not np.isfinite(array).all():
        raise InvalidArgument(f"codebooks[{name!r}]={levels!r}, expected at least one level, all finite")
    return array


def codebooks_figure(codebooks: Mapping[str, Sequence[float]]) -> Figure | None:
    """One row per codebook: its levels as markers on the density of x / absmax for block 64.

    The density is exact, not simulated: :func:`harness.formats.af4.normalized_value_pdf`, the law of a
    non-maximal element of a block of 64 N(0, 1) values divided by the block's absmax. Levels outside
    [-1, 1] (int4's -8/7) are hollow: absmax scaling never reaches them.
    """
    if not codebooks:
        return None
    checked = {name: _check_levels(name, levels) for name, levels in codebooks.items()}
    lowest = min(-1.0, *(float(levels.min()) for levels in checked.values()))
    highest = max(1.0, *(float(levels.max()) for levels in checked.values()))
    margin = 0.04 * (highest - lowest)
    grid = np.linspace(-1.0, 1.0, 801)
    density = normalized_value_pdf(torch.from_numpy(grid), DENSITY_BLOCK_SIZE).numpy()
    top = float(density.max()) * 1.15

    figure = _figure(width=9.0, height=1.0 + 1.05 * len(checked))
    axes = figure.subplots(len(checked), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, levels) in zip(axes, checked.items(), strict=True):
        ax.fill_between(grid, density, color="0.88", linewidth=0)
        ax.plot(grid, density, color="0.55", linewidth=0.8, gid="density")
        at_level = normalized_value_pdf(torch.from_numpy(levels), DENSITY_BLOCK_SIZE).numpy()
        ax.vlines(levels, 0.0, top, color="tab:blue", linewidth=0.9, alpha=0.55)
        inside = np.abs(levels) <= 1.0
        # One Line2D holding every level in code order (gid "levels") so a test can read them back.
        ax.plot(levels, at_level, linestyle="none", marker="none", gid="levels")
        ax.plot(levels[inside], at_level[inside], "o", color="tab:blue", markersize=4.5)
        if not inside.all():
            ax.plot(levels[~inside], at_level[~inside], "o", markersize=4.5, markerfacecolor="white", color="tab:blue")
        distinct = len(np.unique(levels))
        note = f"{len(levels)} levels" + (f"\n{distinct} distinct" if distinct != len(levels) else "")
        ax.set_ylabel(f"{name}\n{note}", rotation=0, ha="right", va="center", fontsize=9)
        ax.set_ylim(-0.06 * top, top)  # room below the baseline so markers at density 0 are not cut
        ax.yaxis.set_major_locator(NullLocator())
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xlim(lowest - margin, highest + margin)
    axes[-1].set_xlabel("level = weight / block absmax")
    figure.suptitle(
        f"4-bit codebooks on the distribution of absmax-normalised Gaussian weights (block {DENSITY_BLOCK_SIZE})"
    )
    figure.supxlabel(
        f"Grey: exact density of x / absmax for a non-maximal element of a block of {DENSITY_BLOCK_SIZE} N(0, 1)"
        f" values\n(the block's maximum, 1/{DENSITY_BLOCK_SIZE} of the elements, sits at ±1 and is not drawn);"
        " hollow markers: levels that absmax scaling never reaches.",
        fontsize=8,
        color="0.3",
    )
    return figure


# --- error against block size --------------------------------------------------------------------------


def error_vs_block_size_figure(results: Sequence[Result]) -> Figure | None:
    """One subplot per error metric present, one line per implementation, x = block size (log2)."""
    # (metric) -> (suite, data, implementation) -> block size -> value
    series: dict[str, dict[tuple[str, str, str], dict[int, float]]] = {}
    for result in results:
        match = _CASE_BLOCK.match(result.case)
        if result.metric not in ERROR_METRICS or match is None:
            continue
        key = (result.suite, match["data"] or "", result.implementation)
        series.setdefault(result.metric, {}).setdefault(key, {})[int(match["block"])] = result.value
    metrics = [metric for metric in ERROR_METRICS if metric in series]
    if not metrics:
        return None
    units = _units(results, metrics)
    directions = _directions(results, metrics)
    keys = sorted({key for metric in metrics for key in series[metric]})
    suites = {suite for suite, _, _ in keys}
    datasets = sorted({data for _, data, _ in keys})
    colors = _colors(implementation for _, _, implementation in keys)
    markers = {impl: _MARKERS[i % len(_MARKERS)] for i, impl in enumerate(sorted({k[2] for k in keys}))}

    figure = _figure(width=4.0 * len(metrics) + 2.8, height=4.2)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    handles: dict[str, Any] = {}
    omitted: dict[str, list[str]] = {}
    for ax, metric in zip(axes, metrics, strict=True):
        log_y = metric != "sqnr_db"
        drawn_values: list[float] = []
        blocks_drawn: set[int] = set()
        for key in keys:
            points = series[metric].get(key)
            if not points:
                continue
            suite, data, implementation = key
            drawable = sorted((b, v) for b, v in points.items() if math.isfinite(v) and (v > 0 or not log_y))
            label = (
                implementation
                + (f" [{data}]" if len(datasets) > 1 else "")
                + (f" ({suite})" if len(suites) > 1 else "")
            )
            for block, value in sorted(points.items()):
                if (block, value) not in drawable:
                    omitted.setdefault(label, []).append(f"{metric} = {value:g} at block {block}")
            if not drawable:
                continue
            xs, ys = zip(*drawable, strict=True)
            blocks_drawn.update(xs)
            drawn_values.extend(ys)
            (line,) = ax.plot(
                xs,
                ys,
                color=colors[implementation],
                marker=markers[implementation],
                markersize=5,
                linestyle=_LINESTYLES[datasets.index(data) % len(_LINESTYLES)],
                label=label,
                gid=f"{metric}:{label}",
            )
            handles.setdefault(label, line)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sorted(blocks_drawn)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
        ax.tick_params(axis="x", labelsize=8)
        if log_y:
            ax.set_yscale("log")
            _plain_log_labels(ax, drawn_values)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("block size (elements, log2 scale)")
        ax.set_ylabel(f"{_METRIC_NAMES.get(metric, metric)} ({units[metric]})" + (", log scale" if log_y else ""))
        ax.set_title(f"{_METRIC_NAMES.get(metric, metric)}: {directions[metric]} is better", fontsize=10)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside right upper", title="implementation")
    if omitted:
        # Exact reconstructions (identity at fp32) have MSE 0 and SQNR +inf: say so instead of dropping silently.
        lines = [f"{label}: {'; '.join(why)}" for label, why in omitted.items()]
        figure.supxlabel("Not drawn (0 on a log axis, or not finite): " + " | ".join(lines), fontsize=8, color="0.3")
    cases = ", ".join(f"{data}-block<N>" if data else "block<N>" for data in datasets)
    figure.suptitle(f"Quantization error against block size (cases {cases})")
    return figure


# --- throughput ----------------------------------------------------------------------------------------


def throughput_figure(results: Sequence[Result]) -> Figure | None:
    """Timing results: one subplot per metric, one horizontal bar per (case, implementation), CI whiskers."""
    timing = [r for r in results if r.kind == "timing" and math.isfinite(r.value)]
    if not timing:
        return None
    metrics = _ordered_metrics(r.metric for r in timing)
    units = _units(timing, metrics)
    directions = _directions(timing, metrics)
    colors = _colors(r.implementation for r in results)
    panels: list[tuple[str, list[Result]]] = []
    for metric in metrics:
        latest = _latest(r for r in timing if r.metric == metric)
        if len(latest) <= _MAX_BARS_PER_PANEL:
            panels.append((metric, latest))
        else:  # a full kernels run: one panel per case, so each stays readable
            for case in sorted({r.case for r in latest}):
                panels.append((metric, [r for r in latest if r.case == case]))
    bar_counts = [len(chosen) for _, chosen in panels]

    figure = _figure(width=9.0, height=1.0 + sum(0.9 + 0.32 * n for n in bar_counts))
    axes = figure.subplots(len(panels), 1, squeeze=False, height_ratios=[0.9 + 0.32 * n for n in bar_counts])[:, 0]
    for ax, (metric, panel) in zip(axes, panels, strict=True):
        chosen = sorted(panel, key=lambda r: (r.case, r.implementation))
        several_cases = len({r.case for r in chosen}) > 1
        positions = np.arange(len(chosen))[::-1]  # first row at the top
        ax.barh(
            positions,
            [r.value for r in chosen],
            color=[colors[r.implementation] for r in chosen],
            height=0.7,
            gid=metric,
        )
        _whiskers(ax, chosen, positions)
        for result, y in zip(chosen, positions, strict=True):  # value written past the whisker, not on it
            end = max(result.value, result.ci_high if result.ci_high is not None else result.value)
            ax.annotate(
                f"{result.value:.3g}", (end, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8
            )
        ax.set_yticks(
            positions, [f"{r.implementation} · {r.case}" if several_cases else r.implementation for r in chosen]
        )
        values = [r.value for r in chosen]
        if min(values) > 0 and max(values) / min(values) > _LOG_SPAN:  # ratios from 0.9x to 100x: log scale
            ax.set_xscale("log")
            ax.set_xlim(min(values) / 1.5, _upper_limit(chosen) * 2.5)
        else:
            ax.set_xlim(min(0.0, *values), _upper_limit(chosen) * 1.18)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlabel(f"{_METRIC_NAMES.get(metric, metric)} ({units[metric]})")
        cases = "" if several_cases else f" on {chosen[0].case}"
        ax.set_title(f"{_METRIC_NAMES.get(metric, metric)}{cases}: {directions[metric]} is better", fontsize=10)
    figure.suptitle("Throughput (bars: recorded value; whiskers: confidence interval where recorded)")
    return figure


# --- sampled accuracy ----------------------------------------------------------------------------------


def accuracy_figure(results: Sequence[Result]) -> Figure | None:
    """Sampled results: one subplot per metric, one point per implementation (and case), CI whiskers."""
    sampled = [r for r in results if r.kind == "sampled" and math.isfinite(r.value)]
    if not sampled:
        return None
    metrics = _ordered_metrics(r.metric for r in sampled)
    units = _units(sampled, metrics)
    directions = _directions(sampled, metrics)
    colors = _colors(r.implementation for r in results)
    implementations = sorted({r.implementation for r in sampled})
    cases = sorted({r.case for r in sampled})
    slot = 0.6 / len(cases)  # cases of one implementation side by side within its row
    offsets = {case: ((len(cases) - 1) / 2 - i) * slot for i, case in enumerate(cases)}  # legend order, top down
    rows = {impl: len(implementations) - 1 - i for i, impl in enumerate(implementations)}  # first at the top

    figure = _figure(
        width=3.6 * len(metrics) + 2.4 + (1.6 if len(cases) > 1 else 0), height=max(3.0, 1.6 + 0.4 * len(rows))
    )
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        chosen = sorted(_latest(r for r in sampled if r.metric == metric), key=lambda r: (r.implementation, r.case))
        for result in chosen:
            y = rows[result.implementation] + offsets[result.case]
            ax.errorbar(
                [result.value],
                [y],
                xerr=_error_extent([result]),
                fmt=_MARKERS[cases.index(result.case) % len(_MARKERS)],
                color=colors[result.implementation],
                markersize=6,
                capsize=3,
                label=f"{result.implementation}|{result.case}",
            )
        ax.grid(True, axis="x", alpha=0.3)
        unit = units[metric]
        ax.set_xlabel(_METRIC_NAMES.get(metric, metric) + (f" ({unit})" if unit else ""))
        ax.set_title(f"{_METRIC_NAMES.get(metric, metric)}: {directions[metric]} is better", fontsize=10)
    axes[0].set_yticks(list(rows.values()), list(rows))
    axes[0].set_ylim(-0.6, len(rows) - 0.4)
    if len(cases) > 1:
        handles = [
            axes[0].plot([], [], _MARKERS[i % len(_MARKERS)], color="0.3", label=case)[0]
            for i, case in enumerate(cases)
        ]
        figure.legend(handles, cases, loc="outside right upper", title="case")
    title_case = f" on {cases[0]}" if len(cases) == 1 else ""
    figure.suptitle(f"Sampled accuracy{title_case} (points: value; whiskers: confidence interval where recorded)")
    return figure


# --- helpers -------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg explicitly, whatever backend the user's session selected
    return figure


def _colors(implementations: Iterable[str]) -> dict[str, Any]:
    """A stable colour per implementation: assigned from sorted names, so one name keeps its colour."""
    from matplotlib import colormaps

    names = sorted(set(implementations))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _ordered_metrics(metrics: Iterable[str]) -> list[str]:
    present = set(metrics)
    return [m for m in _METRIC_ORDER if m in present] + sorted(present - set(_METRIC_ORDER))


def _plain_log_labels(ax: Axes, values: Sequence[float]) -> None:
    """Log-axis labels as plain numbers (0.02, not 2x10^-2); minor ticks labelled only on a short range."""
    plain = FuncFormatter(lambda value, _: f"{value:.3g}")
    ax.yaxis.set_major_formatter(plain)
    short_range = bool(values) and math.log10(max(values) / min(values)) < 1.3
    ax.yaxis.set_minor_formatter(plain if short_range else NullFormatter())


def _units(results: Iterable[Result], metrics: Iterable[str]) -> dict[str, str]:
    wanted = set(metrics)
    units = {metric: _DEFAULT_UNITS.get(metric, "") for metric in wanted}
    for result in results:
        if result.metric in wanted and result.unit:
            units[result.metric] = result.unit
    return units


def _directions(results: Iterable[Result], metrics: Iterable[str]) -> dict[str, str]:
    wanted = set(metrics)
    return {r.metric: r.direction for r in results if r.metric in wanted}


def _latest(results: Iterable[Result]) -> list[Result]:
    """One result per (suite, case, implementation, metric): the last one recorded wins."""
    return list({result.key: result for result in results}.values())


def _error_extent(results: Sequence[Result]) -> np.ndarray | None:
    """Asymmetric whisker lengths (2, n) from ci_low/ci_high; None when no result has an interval."""
    if all(r.ci_low is None and r.ci_high is None for r in results):
        return None
    below = [max(r.value - r.ci_low, 0.0) if r.ci_low is not None else 0.0 for r in results]
    above = [max(r.ci_high - r.value, 0.0) if r.ci_high is not None else 0.0 for r in results]
    return np.array([below, above])


def _whiskers(ax: Axes, results: Sequence[Result], positions: np.ndarray) -> None:
    """Horizontal confidence-interval whiskers on the bars of the results that have an interval."""
    with_ci = [i for i, r in enumerate(results) if r.ci_low is not None or r.ci_high is not None]
    if not with_ci:
        return
    ax.errorbar(
        [results[i].value for i in with_ci],
        positions[with_ci],
        xerr=_error_extent([results[i] for i in with_ci]),
        fmt="none",
        ecolor="0.15",
        capsize=3,
        linewidth=1,
        label="confidence interval",
    )


def _upper_limit(results: Sequence[Result]) -> float:
    tops = [max(r.value, r.ci_high if r.ci_high is not None else r.value) for r in results]
    return max(max(tops), 1e-12)
