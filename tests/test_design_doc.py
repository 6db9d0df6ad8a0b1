"""docs/design.md describes the repository that is there: the files it cites
exist, its layout names every rules file, its module list every module."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = (ROOT / "docs" / "design.md").read_text()
# Top-level folders of the repository; results/ and logs/ are a run's outputs.
REPO_TOPS = ("src/", "tests/", "workflow/", "config/", "scripts/", "benchmarks/", "profiles/")


def _section(title: str) -> str:
    start = DESIGN.index(f"\n## {title}\n")
    end = DESIGN.find("\n## ", start + 1)
    return DESIGN[start : end if end != -1 else None]


def test_cited_repository_paths_exist():
    cited = set(re.findall(r"`([\w.\-/]+)`", DESIGN))
    paths = {c for c in cited if c.startswith((*REPO_TOPS, ".test/")) or c.endswith(".md")}
    assert paths, "no repository path found: has the citation style changed?"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/design.md cites files that are not in the repository: {missing}"


def test_layout_lists_existing_files_and_every_rules_file():
    block = _section("Layout").split("```")[1]
    for line in block.strip().splitlines():
        if line.startswith("results/"):  # a run's outputs
            continue
        for path in re.split(r",\s*", line.split("  ")[0].strip()):
            assert list(ROOT.glob(path.rstrip("/"))), f"Layout names {path}, which is missing"
    listed = re.search(r"one file per stage \(([^)]*)\)", block).group(1)
    rules = {p.stem for p in (ROOT / "workflow" / "rules").glob("*.smk")}
    assert set(re.split(r",\s*", listed)) == rules


def test_module_list_names_every_module():
    text = _section("Layout")
    text = text[text.index("Package modules") :]
    named = set(re.findall(r"`(\w+)`", text))
    modules = {p.stem for p in (ROOT / "src" / "risbench").glob("*.py")} - {"__init__"}
    assert modules <= named, f"design.md's module list omits {sorted(modules - named)}"
