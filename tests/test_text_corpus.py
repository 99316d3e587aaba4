"""The real-text corpus (Python's own source): fixed documents, a manifest that names it, the same file twice."""

import json

import pytest

from grokcopy.training.text_corpus import (
    MANIFEST,
    TRAIN_FILE,
    build_stdlib_corpus,
    stdlib_sources,
)


def _fake_stdlib(root):
    (root / "pkg").mkdir(parents=True)
    (root / "site-packages").mkdir()
    (root / "a.py").write_text("def f(x):\n    return x + x\n" * 20)
    (root / "pkg" / "b.py").write_text("class C:\n    name = 'C'\n" * 20)
    (root / "site-packages" / "third.py").write_text("not the standard library\n" * 20)
    return root


def test_documents_manifest_and_a_rebuild_that_changes_nothing(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    assert [p.name for p in stdlib_sources(root)] == ["a.py", "b.py"]  # site-packages left out
    manifest = build_stdlib_corpus(tmp_path / "corpus", document_chars=16, seed=0, root=root)
    lines = [json.loads(line)["text"] for line in (tmp_path / "corpus" / TRAIN_FILE).read_text().splitlines()]
    assert len(lines) == manifest["documents"] == manifest["characters"] // 16 and {len(t) for t in lines} == {16}
    assert "".join(sorted(lines)) != "" and not any("third" in t for t in lines)
    assert json.loads((tmp_path / "corpus" / MANIFEST).read_text()) == manifest and manifest["files"] == 2
    again = build_stdlib_corpus(tmp_path / "again", document_chars=16, seed=0, root=root)
    assert again["sha256"] == manifest["sha256"]
    assert build_stdlib_corpus(tmp_path / "other", document_chars=16, seed=1, root=root)["sha256"] != manifest["sha256"]
    with pytest.raises(ValueError, match="document_chars"):
        build_stdlib_corpus(tmp_path / "bad", document_chars=1, root=root)
    with pytest.raises(FileNotFoundError, match="no .py files"):
        build_stdlib_corpus(tmp_path / "bad", root=tmp_path / "empty")


def test_grokcopy_corpus_builds_it_from_the_command_line(tmp_path, monkeypatch, capsys):
    import sysconfig

    from grokcopy.cli import main

    root = _fake_stdlib(tmp_path / "lib")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(root)})
    assert main(["corpus", str(tmp_path / "corpus"), "--document-chars", "32"]) == 0
    assert "documents of 32 characters from 2 files" in capsys.readouterr().out
    assert json.loads((tmp_path / "corpus" / MANIFEST).read_text())["document_chars"] == 32
