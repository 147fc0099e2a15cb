"""The README's two opening commands are the project's contract with a fresh machine."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def opening_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```")[1]  # the first fenced block
    return [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands():
    cmds = opening_commands()
    assert len(cmds) == 2, cmds
    assert all(c.startswith("pip install torch==2.13.0") for c in cmds)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert opening_commands()[1] in ci
