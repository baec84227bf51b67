"""RESULTS.md's sections as the benchmark scripts write them
(benchmarks/rnn.py's replace_section): one replaced where it stands, a new
one added at the end, the rest kept byte for byte."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from rnn import replace_section  # noqa: E402

BEFORE = """# Benchmark results

## LSTM

old table

## Compile times

old times

## Thread scaling, 2 cores

### LSTM

kept
"""


def test_a_section_is_replaced_where_it_stands(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(BEFORE, "utf-8")
    replace_section(path, "## Compile times", ["## Compile times", "", "new times", ""])
    assert path.read_text("utf-8") == BEFORE.replace("old times", "new times")


def test_a_heading_matches_whole_lines_only(tmp_path):
    """`## LSTM` is not the `### LSTM` inside an earlier section."""
    scaling_first = "# Benchmark results\n\n## Thread scaling, 2 cores\n\n### LSTM\n\nkept\n\n" \
        "## LSTM\n\nold table\n"
    path = tmp_path / "RESULTS.md"
    path.write_text(scaling_first, "utf-8")
    replace_section(path, "## LSTM", ["## LSTM", "", "new table"])
    assert path.read_text("utf-8") == scaling_first.replace("old table", "new table")


def test_the_last_section_and_a_new_one(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(BEFORE, "utf-8")
    replace_section(path, "## Thread scaling, 2 cores", ["## Thread scaling, 2 cores", "", "new"])
    replace_section(path, "## Tagger", ["## Tagger", "", "first"])
    assert path.read_text("utf-8") == BEFORE.split("## Thread scaling")[0] + (
        "## Thread scaling, 2 cores\n\nnew\n\n## Tagger\n\nfirst\n")
