"""The HTML report: self-contained, well-formed, and showing what it promises (graph,
features kept and dropped by name, pinned reasons, sizes, training plot)."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.report_html import render_html

VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "source"}
SVG_EMPTY = {"rect", "line", "path", "circle", "polyline"}
LONG = "encoder.very_long_module_name_that_goes_on_and_on.projection"


class Page(HTMLParser):
    """Tags, attributes and text of a page, checking that every tag is closed in order."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text, self.titles = [], [], [], []
        self._open: list[str] = []
        self.feed(text)
        self.close()
        assert not self._open, f"unclosed tags: {self._open}"

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self._open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag):
        assert self._open and self._open[-1] == tag, f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1] == "title":
            self.titles.append(data)
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


class Wide(nn.Module):
    """A residual block, a long module name, and a model output (pinned)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.mid = nn.Linear(8, 8)
        self.encoder = nn.Module()
        inner = nn.Module()
        inner.projection = nn.Linear(8, 6)
        self.encoder.add_module(LONG.split(".")[1], inner)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.embed(x))
        h = h + torch.relu(self.mid(h))
        block = getattr(self.encoder, LONG.split(".")[1]).projection
        return self.head(torch.relu(block(h)))


FEATURES = ["density", "velocity<x>", "pressure", "noise & co"]


def _page(history: bool = True) -> tuple[str, dict]:
    torch.manual_seed(0)
    gated = lumos.compile(Wide(), example_inputs=(torch.randn(3, 4),), feature_names=FEATURES)
    if history:
        monitor = lumos.TrainingMonitor(gated, every=1, progress=False)
        for loss in (1.0, 0.5, 0.2):
            monitor.step(loss=loss)
    with torch.no_grad():
        lumos.gates(gated)["x"].log_alpha[3] = -6.0
        lumos.gates(gated)[LONG].log_alpha[:2] = -6.0
    report = lumos.report(gated, latency={"batch 1": (5e-5, 2e-5)})
    return report.to_html(), report.to_dict()


def test_page_is_well_formed_and_self_contained():
    html, _ = _page()
    page = Page(html)
    assert html.startswith("<!DOCTYPE html>")
    for name, value in page.attrs:
        assert not (value or "").lstrip().startswith(("http:", "https:", "//")), (name, value)
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert not {"script", "link", "img", "iframe"} & set(page.tags)
    assert page.tags.count("svg") == 3                     # graph, kept fraction, loss


def test_page_shows_features_pinned_ops_and_sizes():
    html, data = _page()
    page = Page(html)
    text = page.all_text
    for name in FEATURES:
        assert name in text                                 # escaped in the file, intact as text
    assert "velocity<x>" not in html and "velocity&lt;x&gt;" in html
    assert "kept 3 of 4 features" in text
    assert '<span class="chip dropped">noise &amp; co</span>' in html
    for group in data["groups"]:
        if group["pinned"]:
            assert group["pinned"] in text
    assert "model output" in text
    assert "µs" in text and "2.50x faster" in text
    before, after = data["params"]["before"], data["params"]["after"]
    assert f"{before} → {after}" in text and f"{after / before:.1%} of before" in text


def test_long_names_are_cut_with_the_full_name_on_hover():
    html, _ = _page()
    page = Page(html)
    assert LONG in page.titles                              # an svg <title> carries it
    assert any("…" in t and t.endswith("projection") for t in page.text)


def test_graph_draws_every_layer_before_and_after():
    html, data = _page()
    layers = {name for g in data["groups"] if g["kind"] != "positions"
              for name in g["producers"] + g["consumers"]}
    assert html.count('class="box') == 2 * len(layers)      # one box per panel
    assert html.count('class="box layer shrunk') >= 1 and 'class="box layer pinned' in html
    assert 'class="edge skip"' in html                       # the residual connection arcs


def test_without_history_the_page_says_how_to_record_one():
    html, data = _page(history=False)
    page = Page(html)
    assert page.tags.count("svg") == 1
    assert "TrainingMonitor" in page.all_text


def test_a_saved_json_report_renders_the_same_page(tmp_path):
    html, data = _page()
    assert render_html(json.loads(json.dumps(data))) == html
