"""PNG plots: files written only for data present, valid and non-blank images, the drawn data equal to the
results, byte-identical output for identical input, and clear errors for a bad folder or codebook."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image

from harness.checks.metrics import error_stats
from harness.errors import InvalidArgument
from harness.formats import codebook
from harness.quantizers.reference import ReferenceQuantizer
from harness.report.plots import (
    DPI,
    accuracy_figure,
    codebooks_figure,
    default_codebooks,
    error_vs_block_size_figure,
    throughput_figure,
    write_plots,
)
from harness.results.records import Direction, Result

BLOCK_SIZES = (32, 64, 256)
FORMATS = ("nf4", "int4")


def _error_results() -> list[Result]:
    """Real error statistics of two reference quantizers on a small seeded Gaussian, as the suite names them."""
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(7))
    results = []
    for fmt in FORMATS:
        for block_size in BLOCK_SIZES:
            quantizer = ReferenceQuantizer(fmt, block_size)
            stats = error_stats(x, quantizer.dequantize(quantizer.quantize(x)))
            case = f"gauss-block{block_size}"
            results += [
                Result("properties", case, f"ref-{fmt}", "mse", stats.mse),
                Result("properties", case, f"ref-{fmt}", "mae", stats.mae),
                Result("properties", case, f"ref-{fmt}", "max_error", stats.max_error),  # not plotted
                Result("properties", case, f"ref-{fmt}", "sqnr_db", stats.sqnr_db, unit="dB", direction="higher"),
            ]
    return results


def _timing(
    case: str, implementation: str, metric: str, value: float, ci_low: float | None = None, ci_high: float | None = None
) -> Result:
    # as the kernels suite records them: a ratio of times (lower is better) or, in older runs, a timed GB/s
    unit, direction = ("GB/s", "higher") if metric == "gbps" else ("x", "lower")
    return Result(
        "kernels", case, implementation, metric, value, unit, "timing", direction, ci_low=ci_low, ci_high=ci_high
    )


def _sampled(
    implementation: str,
    metric: str,
    value: float,
    direction: Direction,
    ci_low: float | None = None,
    ci_high: float | None = None,
) -> Result:
    return Result(
        "accuracy",
        "coqa-smoke",
        implementation,
        metric,
        value,
        "",
        "sampled",
        direction,
        ci_low=ci_low,
        ci_high=ci_high,
    )


TIMING = [
    _timing("dequantize-4096", "ref-nf4", "gbps", 3.0, ci_low=2.5, ci_high=3.4),
    _timing("dequantize-4096", "bnb-nf4", "gbps", 4.5),
    _timing("quantize-4096", "ref-nf4", "gbps", 2.0, ci_low=1.9, ci_high=2.2),
    _timing("dequantize-4096", "ref-nf4", "kernel_over_copy", 0.3),
]
SAMPLED = [
    _sampled("fp32", "coqa_f1", 0.62, "higher", ci_low=0.58),
    _sampled("ref-nf4", "coqa_f1", 0.6, "higher", ci_low=0.55, ci_high=0.64),
    _sampled("ref-nf4", "kld_mean", 0.05, "lower", ci_low=0.04, ci_high=0.07),
]


@pytest.fixture(scope="module")
def error_results() -> list[Result]:
    return _error_results()


def _series(results: list[Result], implementation: str, metric: str) -> dict[int, float]:
    return {
        int(r.case.removeprefix("gauss-block")): r.value
        for r in results
        if r.implementation == implementation and r.metric == metric
    }


def _axes_titled(figure: Figure, start: str) -> Axes:
    (ax,) = [ax for ax in figure.axes if ax.get_title().startswith(start)]
    return ax


def _xy(line: Line2D) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=np.float64), np.asarray(line.get_ydata(), dtype=np.float64)


def _lines(ax: Axes) -> dict[str, Line2D]:
    """The axes' lines by label (data lines; helper lines carry matplotlib's "_child" labels)."""
    return {str(line.get_label()): line for line in ax.lines if not str(line.get_label()).startswith("_")}


def _by_gid(ax: Axes) -> dict[str, Line2D]:
    return {line.get_gid(): line for line in ax.lines if line.get_gid() is not None}  # type: ignore[misc]


def test_writes_all_plots_as_valid_non_blank_pngs(tmp_path: Path, error_results: list[Result]) -> None:
    target = tmp_path / "nested" / "plots"  # created, parents included
    paths = write_plots(error_results + TIMING + SAMPLED, target)
    names = ["codebooks.png", "error_vs_block_size.png", "throughput.png", "accuracy.png"]
    assert paths == [target / name for name in names]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert 600 <= width <= 2400 and 300 <= height <= 1600, (path.name, image.size)
        assert pixels.std() > 10, f"{path.name} looks blank (pixel std {pixels.std():.2f})"
        assert (pixels < 100).mean() > 0.005, f"{path.name} has almost no dark (text, line) pixels"


def test_image_size_follows_figure_size_and_dpi(tmp_path: Path) -> None:
    (path,) = write_plots([], tmp_path)
    figure = codebooks_figure(default_codebooks())
    assert figure is not None
    width_in, height_in = figure.get_size_inches()
    with Image.open(path) as image:
        assert image.size == (round(width_in * DPI), round(height_in * DPI))


def test_only_plots_with_data_are_written(tmp_path: Path, error_results: list[Result]) -> None:
    assert write_plots([], tmp_path / "none", codebooks={}) == []
    assert list((tmp_path / "none").iterdir()) == []

    only_errors = write_plots(error_results, tmp_path / "errors", codebooks={})
    assert [p.name for p in only_errors] == ["error_vs_block_size.png"]

    # Error metrics on cases without a block size, exact gbps, and max_error alone draw nothing.
    unplottable = [
        Result("properties", "ones", "ref-nf4", "mse", 0.1),
        Result("properties", "gauss-block64", "ref-nf4", "max_error", 0.3),
        Result("kernels", "dequantize", "ref-nf4", "gbps", 3.0, unit="GB/s", kind="exact", direction="higher"),
    ]
    assert write_plots(unplottable, tmp_path / "unplottable", codebooks={}) == []

    only_timing = write_plots(TIMING, tmp_path / "timing", codebooks={})
    assert [p.name for p in only_timing] == ["throughput.png"]
    only_sampled = write_plots(SAMPLED, tmp_path / "sampled", codebooks={})
    assert [p.name for p in only_sampled] == ["accuracy.png"]


def test_output_is_byte_identical_for_identical_input(tmp_path: Path, error_results: list[Result]) -> None:
    results = error_results + TIMING + SAMPLED
    first = write_plots(results, tmp_path / "a")
    second = write_plots(list(reversed(results)), tmp_path / "b")  # input order does not matter either
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
        assert b"Matplotlib" not in a.read_bytes()  # no version stamp that would change the bytes


def test_codebook_rows_show_each_formats_levels_on_the_block64_density() -> None:
    figure = codebooks_figure(default_codebooks())
    assert figure is not None
    assert [ax.get_ylabel().split("\n")[0] for ax in figure.axes] == ["NF4", "FP4", "AF4", "INT4"]
    for ax, name in zip(figure.axes, ("nf4", "fp4", "af4", "int4"), strict=True):
        lines = _by_gid(ax)
        np.testing.assert_allclose(_xy(lines["levels"])[0], codebook(name, 64).numpy(), atol=1e-7)
        density_x, density_y = _xy(lines["density"])
        assert density_x.min() == -1.0 and density_x.max() == 1.0
        # A density: integrates to 1 over [-1, 1] and peaks at 0.
        assert np.trapezoid(density_y, density_x) == pytest.approx(1.0, abs=1e-3)
        assert density_x[np.argmax(density_y)] == pytest.approx(0.0, abs=0.01)
    assert "15 distinct" in figure.axes[1].get_ylabel()  # FP4 holds both +0 and -0
    low, high = figure.axes[-1].get_xlim()
    assert low < -8 / 7 and high > 1.0  # int4's unreachable -8/7 level is on the plot


def test_codebooks_given_by_the_caller_replace_the_defaults(tmp_path: Path) -> None:
    spec = ReferenceQuantizer("af4", 128).spec
    assert spec.codebook is not None
    figure = codebooks_figure({"ref-af4 (block 128)": spec.codebook})
    assert figure is not None and len(figure.axes) == 1
    np.testing.assert_allclose(_xy(_by_gid(figure.axes[0])["levels"])[0], np.array(spec.codebook))
    assert codebooks_figure({}) is None


@pytest.mark.parametrize("bad", [[], [0.0, math.nan], ["a", "b"]], ids=["empty", "nan", "text"])
def test_bad_codebook_is_rejected_naming_it(bad: list[object]) -> None:
    with pytest.raises(InvalidArgument, match="codebooks\\['mine'\\]"):
        codebooks_figure({"mine": bad})  # type: ignore[dict-item]


def test_error_lines_follow_block_size_per_implementation(error_results: list[Result]) -> None:
    figure = error_vs_block_size_figure(error_results)
    assert figure is not None
    assert [ax.get_title().split(":")[0] for ax in figure.axes] == ["MSE", "MAE", "SQNR"]  # no max_error
    for ax, metric in zip(figure.axes, ("mse", "mae", "sqnr_db"), strict=True):
        assert ax.get_xscale() == "log"
        assert ax.get_yscale() == ("linear" if metric == "sqnr_db" else "log")
        assert "block size" in ax.get_xlabel()
        lines = _lines(ax)
        assert sorted(lines) == ["ref-int4", "ref-nf4"]
        for implementation, line in lines.items():
            expected = _series(error_results, implementation, metric)
            xs, ys = _xy(line)
            assert xs.tolist() == sorted(expected)
            assert ys.tolist() == [expected[b] for b in sorted(expected)]
    assert "(dB)" in figure.axes[2].get_ylabel()
    legend_labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend_labels == ["ref-int4", "ref-nf4"]
    # Sanity of the data itself: NF4 beats int4 on Gaussian weights, and error grows with block size.
    mse = {label: _xy(line)[1] for label, line in _lines(figure.axes[0]).items()}
    assert all(mse["ref-nf4"] < mse["ref-int4"])
    assert all(np.diff(mse["ref-nf4"]) > 0)


def test_exact_reconstructions_are_named_not_dropped_silently() -> None:
    results = [
        Result("properties", "gauss-block64", "identity-fp32", "mse", 0.0),
        Result("properties", "gauss-block64", "identity-fp32", "sqnr_db", math.inf, unit="dB", direction="higher"),
        Result("properties", "gauss-block64", "ref-nf4", "mse", 0.01),
        Result("properties", "gauss-block128", "ref-nf4", "mse", 0.011),
    ]
    figure = error_vs_block_size_figure(results)
    assert figure is not None
    labels = [label for ax in figure.axes for label in _lines(ax)]
    assert labels == ["ref-nf4"]  # mse 0 cannot sit on a log axis, +inf dB nowhere
    note = figure.get_supxlabel()
    assert "identity-fp32" in note and "mse = 0 at block 64" in note and "sqnr_db = inf" in note


def test_several_data_sets_and_suites_get_their_own_lines() -> None:
    results = [
        Result("a", "gauss-block64", "ref-nf4", "mse", 0.01),
        Result("a", "laplace-block64", "ref-nf4", "mse", 0.02),
        Result("b", "gauss-block64", "ref-nf4", "mse", 0.03),
    ]
    figure = error_vs_block_size_figure(results)
    assert figure is not None
    drawn = {label: _xy(line)[1].tolist() for label, line in _lines(figure.axes[0]).items()}
    assert drawn == {"ref-nf4 [gauss] (a)": [0.01], "ref-nf4 [laplace] (a)": [0.02], "ref-nf4 [gauss] (b)": [0.03]}


def test_throughput_bars_and_whiskers_match_the_timing_results() -> None:
    figure = throughput_figure([*TIMING, Result("properties", "gauss-block64", "ref-nf4", "mse", 0.01)])
    assert figure is not None
    gbps = _axes_titled(figure, "throughput")
    assert gbps.get_xlabel() == "throughput (GB/s)"
    (bars,) = [c for c in gbps.containers if isinstance(c, BarContainer)]
    labels = [tick.get_text() for tick in gbps.get_yticklabels()]
    positions = list(gbps.get_yticks())
    drawn = {labels[positions.index(p.get_y() + p.get_height() / 2)]: p.get_width() for p in bars.patches}
    assert drawn == {
        "bnb-nf4 · dequantize-4096": 4.5,
        "ref-nf4 · dequantize-4096": 3.0,
        "ref-nf4 · quantize-4096": 2.0,
    }
    (whiskers,) = [c for c in gbps.containers if isinstance(c, ErrorbarContainer)]
    (whisker_lines,) = whiskers.lines[2]
    segments = whisker_lines.get_segments()
    assert sorted((seg[0][0], seg[1][0]) for seg in segments) == [(1.9, 2.2), (2.5, 3.4)]  # bnb has no interval
    ratio = _axes_titled(figure, "time / copy time")
    assert [p.get_width() for p in ratio.patches if isinstance(p, Rectangle)] == [0.3]
    assert not [c for c in ratio.containers if isinstance(c, ErrorbarContainer)]


def test_accuracy_points_and_intervals_match_the_sampled_results() -> None:
    figure = accuracy_figure([*SAMPLED, *TIMING])
    assert figure is not None
    assert [ax.get_title().split(":")[0] for ax in figure.axes] == ["CoQA F1", "mean KL divergence"]
    f1 = figure.axes[0]
    rows = dict(zip([t.get_text() for t in f1.get_yticklabels()], f1.get_yticks(), strict=True))
    assert set(rows) == {"fp32", "ref-nf4"}
    points = {}
    for container in f1.containers:
        assert isinstance(container, ErrorbarContainer)
        data_line, _, bar_lines = container.lines
        assert isinstance(data_line, Line2D)
        (x,), (y,) = _xy(data_line)
        whisker = bar_lines[0]
        assert isinstance(whisker, LineCollection)
        ((low, _), (high, _)) = whisker.get_segments()[0]
        points[str(container.get_label()).split("|")[0]] = (y, x, low, high)
    assert points["ref-nf4"] == pytest.approx((rows["ref-nf4"], 0.60, 0.55, 0.64))
    assert points["fp32"] == pytest.approx((rows["fp32"], 0.62, 0.58, 0.62))  # no upper bound recorded
    kld = figure.axes[1]
    assert [c.get_label() for c in kld.containers] == ["ref-nf4|coqa-smoke"]
    assert kld.get_title().endswith("lower is better")


def test_directory_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for directory in (blocker, blocker / "plots"):
        with pytest.raises(InvalidArgument, match=re.escape(f"directory={str(directory)!r}")):
            write_plots(TIMING, directory)


def test_order_and_colours_depend_on_names_not_on_input_order() -> None:
    names = ["zeta", "alpha", "mu", "beta", "omega", "kappa", "delta"]
    errors = [Result("properties", "gauss-block64", name, "mse", 0.01 * (i + 1)) for i, name in enumerate(names)]
    timing = [_timing("dequantize", name, "gbps", float(i + 1)) for i, name in enumerate(reversed(names))]
    error_figure, throughput = error_vs_block_size_figure(errors), throughput_figure(timing)
    assert error_figure is not None and throughput is not None
    assert [text.get_text() for text in error_figure.legends[0].get_texts()] == sorted(names)
    line_colours = {label: line.get_color() for label, line in _lines(error_figure.axes[0]).items()}
    labels = [tick.get_text() for tick in throughput.axes[0].get_yticklabels()]
    positions = list(throughput.axes[0].get_yticks())
    bar_colours = {
        labels[positions.index(bar.get_y() + bar.get_height() / 2)]: bar.get_facecolor()[:3]
        for bar in throughput.axes[0].patches
        if isinstance(bar, Rectangle)
    }
    assert len(set(bar_colours.values())) == len(names)
    for name in names:  # one implementation, one colour, in every plot
        assert bar_colours[name] == pytest.approx(line_colours[name][:3])


def test_plot_file_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    (tmp_path / "throughput.png").mkdir()  # a folder where the file should go
    with pytest.raises(InvalidArgument, match=re.escape(f"throughput.png in directory={str(tmp_path)!r}")):
        write_plots(TIMING, tmp_path, codebooks={})


def test_a_full_kernels_run_gets_one_throughput_panel_per_case() -> None:
    """Past 24 bars a single panel is unreadable: each case gets its own, and ratios spanning 20x+ go log."""
    timing = [
        Result(
            "kernels",
            f"op{case}",
            f"impl-{impl:02d}",
            "kernel_over_copy",
            1.0 + impl * (10 if case else 1),
            unit="x",
            kind="timing",
        )
        for case in range(2)
        for impl in range(15)
    ]
    figure = throughput_figure(timing)
    assert figure is not None
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title().split(" on ")[1].split(":")[0] for ax in panels] == ["op0", "op1"]
    assert [len(ax.patches) for ax in panels] == [15, 15]
    assert [ax.get_xscale() for ax in panels] == ["linear", "log"]  # 1..15 vs 1..141
