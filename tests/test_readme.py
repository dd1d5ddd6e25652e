"""The README's Python snippets marked ``<!-- test:snippet -->`` run as written.

A marker may name optional packages (``<!-- test:snippet needs=lightning -->``): the
snippet is skipped when one is missing. Each snippet runs in a fresh namespace in a
temporary directory (they write ``report.html`` and friends), and its outputs are checked.
"""
from __future__ import annotations

import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = re.compile(r"<!-- test:snippet(?: needs=([\w,.-]+))? -->\s*```python\n(.*?)```", re.S)


def snippets() -> list[tuple[str, list[str], str]]:
    found = []
    for i, match in enumerate(MARKER.finditer(README.read_text(encoding="utf-8"))):
        needs = match.group(1).split(",") if match.group(1) else []
        found.append((f"snippet{i}-{'-'.join(needs) or 'plain'}", needs, match.group(2)))
    return found


def test_the_readme_has_the_training_snippets():
    needs = [n for _, n, _ in snippets()]
    assert [] in needs and ["transformers", "accelerate"] in needs and ["lightning"] in needs


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


@pytest.mark.filterwarnings("ignore:lumos budget")
@pytest.mark.parametrize("name,needs,code", snippets(), ids=[s[0] for s in snippets()])
def test_snippet_runs(name, needs, code, tmp_path, monkeypatch):
    for package in needs:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs {package}")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace = {"__name__": f"readme_{name}"}
    exec(compile(code, f"README.md:{name}", "exec"), namespace)
    gated = namespace["gated"]
    import lumos_fx as lumos
    history = lumos.report(gated).history
    assert len(history) >= 5 and history[-1]["kept_params"] < history[0]["kept_params"]
    assert any(r["loss"] is not None for r in history)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    assert parser.tags.count("svg") >= 2                   # the graph and the history plot
    if (tmp_path / "gated.pt").exists():
        loaded = torch.load(tmp_path / "gated.pt", weights_only=False)
        assert json.loads(lumos.report(loaded).to_json())["history"] == json.loads(
            lumos.report(gated).to_json())["history"]
