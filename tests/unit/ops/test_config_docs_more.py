"""`python -m ops.config_docs`: --check names each stale file and exits 1; without it, only the
stale files are rewritten (README's text around the table kept), after which --check passes.
Run on copies of deploy/.env.example and README.md in a folder of the test's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops import config_docs
from tests.helpers import bridge_env


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose two documents are stale: an .env.example missing a variable and a
    README table with an old row."""
    (tmp_path / "deploy").mkdir()
    env = tmp_path / "deploy" / ".env.example"
    env.write_text("# old\nIB_API_MODE=\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Bridge\nintro\n{config_docs.TABLE_START}\n| old |\n{config_docs.TABLE_END}\noutro\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(config_docs, "REPO", tmp_path)
    monkeypatch.setattr(config_docs, "ENV_EXAMPLE", env)
    monkeypatch.setattr(config_docs, "README", readme)
    return tmp_path


def test_check_names_each_stale_file_and_changes_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.read_bytes() for p in (repo / "deploy" / ".env.example", repo / "README.md")}
    assert config_docs.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "stale: deploy/.env.example (run python -m ops.config_docs)" in err
    assert "stale: README.md (run python -m ops.config_docs)" in err
    assert {p: p.read_bytes() for p in before} == before


def test_rewrite_then_check_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config_docs.main([]) == 0
    out = capsys.readouterr().out
    assert "rewrote deploy/.env.example" in out and "rewrote README.md" in out
    assert (repo / "deploy" / ".env.example").read_text() == config_docs.env_example()
    readme = (repo / "README.md").read_text()
    assert readme.startswith("# Bridge\nintro\n") and readme.endswith("outro\n")
    assert "| old |" not in readme and config_docs.markdown_table() in readme
    assert config_docs.main(["--check"]) == 0
    assert config_docs.main([]) == 0
    assert capsys.readouterr().out == "", "nothing stale: nothing rewritten"


def test_only_the_stale_file_is_rewritten(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = repo / "deploy" / ".env.example"
    env.write_text(config_docs.env_example(), encoding="utf-8")
    assert config_docs.main([]) == 0
    assert capsys.readouterr().out.splitlines() == ["rewrote README.md"]


def test_a_readme_without_the_markers_is_refused(repo: Path) -> None:
    (repo / "README.md").write_text("no table here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="README lacks the markers"):
        config_docs.main(["--check"])
    assert (repo / "README.md").read_text() == "no table here\n"


def test_the_repository_documents_are_current_as_ci_runs_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ops.config_docs", "--check"],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
