"""The repository stands alone: code and docs cite only its own docs, and the sections they cite exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("covgym", "algorithms", "envs", "docs", "benchmarks", "tests") if (ROOT / folder).is_dir()
           for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md")] + [ROOT / "README.md"]
OUTSIDE = re.compile(r"shared/design|the design's|design/algorithms\.md")


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_nothing_points_outside_the_repository():
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES if p != Path(__file__).resolve()
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, f"references to a file outside the repository: {offenders}"


def test_cited_sections_exist():
    """The docstrings cite these sections by name; the links between the docs resolve."""
    algorithms_md = (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8")
    entropy_md = (ROOT / "docs" / "entropy.md").read_text(encoding="utf-8")
    assert "## Reference formulas (what the code cites)" in algorithms_md
    assert "### The theory, derived" in entropy_md
    for term in ("seq-mean-token-sum-norm", "Clip-Cov", "KL-Cov", "GAE", "low_var_kl", "dp_size"):
        assert term in algorithms_md.split("## Reference formulas")[1], term
    for term in ("−Cov_{a∼π}(log π(a), Δz(a))", "Δz = η·A·(e_a − π)", "π_a > e^{−H}"):
        assert term in entropy_md, term
    docs = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}
    for name, text in docs.items():
        for target, fragment in re.findall(r"\]\(([\w.]+\.md)?#([\w\-]+)\)", text):
            headings = re.findall(r"^#+ (.+)$", docs[target or name], flags=re.M)
            assert fragment in {anchor(h) for h in headings}, f"{name}: broken link {target}#{fragment}"
