"""The report's figures say what they show: throughput with the 95 % CI of the median as error bars, one axis
scale per figure family (named in the caption), roofline points told apart by marker shape with a legend."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from onnxbench.reports import load, plots
from onnxbench.reports.render import PLOTS
from onnxbench.reports.tables import ok_rows, runtime_labels
from tests.conftest import DATA
from tests.derived_runs import synthetic_run


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def _errorbars(ax):
    """{label: (x, y, lo, hi)} of the axes' error-bar containers."""
    out = {}
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer):
            continue
        line, _, (bars,) = container.lines[0], container.lines[1], container.lines[2]
        segments = bars.get_segments()
        out[container.get_label()] = (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float),
                                      np.array([s[0][1] for s in segments]), np.array([s[1][1] for s in segments]))
    return out


def _expected_ci(df, label):
    ok = ok_rows(df).copy()
    ok["_label"] = runtime_labels(ok)
    g = ok[ok["_label"] == label].sort_values("seq_len")
    tok = g["throughput_tok_s"].to_numpy(float)
    p50 = g["latency_ms_p50"].to_numpy(float)
    return tok, tok * p50 / g["ci95_p50_hi_ms"].to_numpy(float), tok * p50 / g["ci95_p50_lo_ms"].to_numpy(float)


def test_throughput_vs_seq_len_has_ci_bars_and_log_axes_in_every_panel(close_figures):
    df = load(DATA / "run_small")
    fig = plots.throughput_vs_seq_len(df, as_figure=True)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == df["batch"].nunique()
    for ax in axes:
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        bars = _errorbars(ax)
        assert set(bars) == {"torch", "ort-cpu"}
    batch = int(sorted(df["batch"].unique())[0])
    first = _errorbars(axes[0])
    for label, (_, y, lo, hi) in first.items():
        tok, exp_lo, exp_hi = _expected_ci(df[df["batch"] == batch], label)
        np.testing.assert_allclose(y, tok, rtol=1e-9)
        np.testing.assert_allclose(lo, exp_lo, rtol=1e-9)
        np.testing.assert_allclose(hi, exp_hi, rtol=1e-9)
        assert (lo <= y).all() and (y <= hi).all()


def test_throughput_by_attention_and_thread_scaling_keep_their_family_scale(close_figures, tmp_path):
    df = load(synthetic_run(tmp_path / "run"))
    fig = plots.throughput_by_attention(df, as_figure=True)
    for ax in (a for a in fig.axes if a.get_visible()):
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        assert _errorbars(ax), "every attention line has CI bars"
    ort = df[df["runtime"] == "ort-cpu"]
    slower = ort.assign(threads=1, latency_ms_p50=ort.latency_ms_p50 * 2, ci95_p50_lo_ms=ort.ci95_p50_lo_ms * 2,
                        ci95_p50_hi_ms=ort.ci95_p50_hi_ms * 2, throughput_tok_s=ort.throughput_tok_s / 2)
    threads = pd.concat([ort.assign(threads=2), slower])
    fig = plots.thread_scaling(threads, as_figure=True)
    for ax in (a for a in fig.axes if a.get_visible()):
        assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
        assert _errorbars(ax)


def test_captions_name_the_axis_scale_and_the_error_bars():
    captions = {filename: title for _, title, filename, _ in PLOTS}
    for name in ("plot_throughput.png", "plot_throughput_attention.png"):
        assert "log" in captions[name] and "95 % CI" in captions[name]
    assert "linear" in captions["plot_threads.png"] and "95 % CI" in captions["plot_threads.png"]
    assert "marker" in captions["plot_roofline.png"]


def test_roofline_points_differ_by_shape_and_the_legend_says_which(close_figures, tmp_path):
    df = load(synthetic_run(tmp_path / "run"))
    ok = ok_rows(df).dropna(subset=["flops", "bytes_moved", "achieved_gflops"])
    fig = plots.roofline(df, as_figure=True)
    ax = fig.axes[0]
    shapes = {f"{b}×{t}" for b, t in zip(ok["batch"], ok["seq_len"], strict=True)}
    markers = {}
    for collection in ax.collections:
        label = collection.get_label()
        if label in shapes:
            markers[label] = collection.get_paths()[0].vertices.tobytes()
    assert set(markers) == shapes and len(set(markers.values())) == len(shapes), "one marker shape per shape"
    legend_text = {t.get_text() for legend in [ax.get_legend(), *ax.artists] if legend is not None
                   for t in legend.get_texts()}
    labels = set(runtime_labels(ok_rows(ok)))
    assert labels <= legend_text and shapes <= legend_text
