"""The README and the docs pages: links resolve, results blocks name the page that holds them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"<!-- results:(\w+) -->\n(.*?)<!-- /results:\1 -->", re.S)
WRITE = re.compile(r"--write ([\w./-]+\.md):(\w+)")


def _pages():
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "<!-- results:" not in text  # results tables live on docs/results/*.md
    assert "pip install -e '.[dev]' && python -m pytest -q" in text  # .ci/run runs it


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists(), f"README.md links to {target}, which is missing"


def test_every_results_block_is_written_to_the_page_that_holds_it():
    seen = {}
    for page in _pages():
        rel = page.relative_to(ROOT).as_posix()
        text = page.read_text(encoding="utf-8")
        for name, body in BLOCK.findall(text):
            assert name not in seen, f"results:{name} is in {seen.get(name)} and {rel}"
            seen[name] = rel
            for path, section in WRITE.findall(body):
                assert (path, section) == (rel, name), (
                    f"{rel}: block results:{name} says it was written to {path}:{section}")
        # Commands beside the blocks write to a page and section that exist.
        for path, section in WRITE.findall(BLOCK.sub("", text)):
            target = ROOT / path
            assert target.exists(), f"{rel}: --write {path}:{section}, which is missing"
            assert f"<!-- results:{section} -->" in target.read_text(encoding="utf-8"), (
                f"{rel}: --write {path}:{section}, but {path} has no such block")
    assert {"consensus_targets", "consensus_scaffold_targets", "performance",
            "tosg_celltype"} <= set(seen)
