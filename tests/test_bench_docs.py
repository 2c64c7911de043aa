"""benchmarks/_docs.write_section: one script's section of docs/benchmarks.md replaced or appended, the rest kept."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _docs import write_section  # noqa: E402

DOC = "# Benchmarks\n\nintro\n\n## A\n\nold a\n\n### A.1\n\nsub\n\n## B\n\nold b\n"


def test_a_section_is_replaced_up_to_the_next_section_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "b.md"
    path.write_text(DOC)
    write_section("## A", "## A\n\nnew a\n", path)
    assert path.read_text() == "# Benchmarks\n\nintro\n\n## A\n\nnew a\n\n## B\n\nold b\n"
    write_section("## B", "new b", path)  # the last section, body without its heading
    assert path.read_text() == "# Benchmarks\n\nintro\n\n## A\n\nnew a\n\n## B\n\nnew b\n"


def test_a_missing_section_is_appended_and_a_missing_file_created(tmp_path):
    path = tmp_path / "b.md"
    path.write_text(DOC)
    write_section("## C", "c", path)
    assert path.read_text() == DOC + "\n## C\n\nc\n"
    write_section("## A", "x", tmp_path / "new.md")
    assert (tmp_path / "new.md").read_text().endswith("\n## A\n\nx\n")
    write_section("## A.", "y", path)  # a heading that only starts another one is a different section
    assert "## A\n\nold a" in path.read_text() and path.read_text().endswith("## A.\n\ny\n")
