"""The README's two set-up commands are what CI runs, word for word."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text("utf-8")
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    ci = [line for line in (ROOT / ".ci/run").read_text("utf-8").splitlines()
          if line.startswith("python3 ")]
    assert len(block) == 2
    assert ci == block
    assert "seqdsl train" in block[0] and "seqdsl sample" in block[0]
    assert "pytest" in block[1]
