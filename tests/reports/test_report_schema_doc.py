"""docs/schema.md documents every result column and is what the generator writes (so it cannot go stale)."""

from pathlib import Path

from onnxbench.reports.schema_doc import render
from onnxbench.schema import COLUMNS, KEY_COLUMNS, SCHEMA_VERSION

DOC = Path(__file__).parents[2] / "docs" / "schema.md"
FIX = "regenerate it: python -m onnxbench.reports.schema_doc docs/schema.md"


def test_schema_doc_lists_every_column_with_type_and_unit():
    text = DOC.read_text(encoding="utf-8")
    lines = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")}
    missing = [c for c in COLUMNS if c not in lines]
    assert not missing, f"docs/schema.md lacks {missing}; {FIX}"
    for name, (kind, meaning) in COLUMNS.items():
        assert f"| {kind} |" in lines[name] and meaning.split("|")[0].strip() in lines[name], f"{name}: {FIX}"
    for key in KEY_COLUMNS:
        assert "| yes |" in lines[key]
    assert f"version {SCHEMA_VERSION}" in text


def test_schema_doc_is_the_generated_text():
    assert DOC.read_text(encoding="utf-8") == render(), f"docs/schema.md is stale; {FIX}"
