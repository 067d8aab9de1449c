"""The strict loader: what it refuses, where it says so, and the position table."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from relaygate import gitrepo, load, pipeline
from relaygate.load import FORBIDDEN_CHARACTERS, load_document, parse_text
from relaygate.source import TreeSource


def rules_at(text: str) -> list[tuple[str, int, int]]:
    result = parse_text(Path("x.yaml"), "x.yaml", text, [])
    return [(f.rule, f.line, f.column) for f in result.findings]


def test_forbidden_class_covers_every_invisible_code_point() -> None:
    missing = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if (
            unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp")
            or (unicodedata.category(chr(cp)) == "Zs" and cp != 0x20)
        )
        and chr(cp) not in "\t\n\r"
        and not FORBIDDEN_CHARACTERS.fullmatch(chr(cp))
    ]
    assert missing == []
    assert FORBIDDEN_CHARACTERS.search("plain ascii, é and 中文") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: 2\na: 3\n", [("yaml.duplicate-key", 3, 1)]),
        ("a: &x 1\nb: *x\n", [("yaml.anchor", 1, 4), ("yaml.alias", 2, 4)]),
        ("a: 1\n<<: {b: 2}\n", [("yaml.merge-key", 2, 1)]),
        ("a: !!str 123\n", [("yaml.tag", 1, 4)]),
        ("- a\n", [("yaml.not-mapping", 1, 1)]),
        ("", [("yaml.not-mapping", 1, 1)]),
        ("a: 1\n---\nb: 2\n", [("yaml.multiple-documents", 2, 1)]),
        ("a: [1, 2\n", [("yaml.syntax", 2, 1)]),
        ("a: x\u202ey\n", [("file.forbidden-character", 1, 5)]),
        ("# \u200b hidden\na: 1\n", [("file.forbidden-character", 1, 3)]),
        ("a: 1\r\n", [("file.line-endings", 1, 5)]),
        ("123: a\n", [("yaml.non-string-key", 1, 1)]),
        ("a: no\n", [("yaml.ambiguous-scalar", 1, 4)]),
        ("a: 0755\n", [("yaml.ambiguous-scalar", 1, 4)]),
        ("a: 1:30\n", [("yaml.ambiguous-scalar", 1, 4)]),
        ("a: 0x1f\n", [("yaml.ambiguous-scalar", 1, 4)]),
        ("a: .inf\n", [("yaml.ambiguous-scalar", 1, 4)]),
        ("a: 'no'\nb: true\nc: 12\nd: 2026-06-15\n", []),
    ],
)
def test_refusals_are_located(text: str, expected: list[tuple[str, int, int]]) -> None:
    assert rules_at(text) == expected


def test_plain_values_keep_what_a_reader_sees() -> None:
    result = parse_text(
        Path("x"), "x", "a: true\nb: 12\nc: 1.5\nd: 2026-06-15\ne: ~\nf: '010'\n", []
    )
    assert result.document is not None
    assert result.document.data == {
        "a": True,
        "b": 12,
        "c": 1.5,
        "d": "2026-06-15",
        "e": None,
        "f": "010",
    }


def test_positions_live_beside_the_data() -> None:
    result = parse_text(Path("x"), "x", "a:\n  b:\n    - 1\n    - c: 2\n", [])
    document = result.document
    assert document is not None
    assert document.data == {"a": {"b": [1, {"c": 2}]}}  # no position keys in the data
    assert document.locate(("a", "b", 1, "c")) == (4, 10)
    assert document.locate(("a", "b", 1, "c"), key=True) == (4, 7)
    assert document.locate(("a", "b", 1, "missing"), key=True) == (4, 7)
    assert document.locate(("a", "b", 0)) == (3, 7)


def test_files_it_will_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 200 + "\n")
    assert [f.rule for f in load_document(big, "big.yaml", 100).findings] == ["file.too-large"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nb: caf\xe9\n")
    findings = load_document(latin, "latin.yaml", 1000).findings
    assert [(f.rule, f.line, f.column) for f in findings] == [("file.not-utf8", 2, 7)]
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfa: 1\n")
    result = load_document(bom, "bom.yaml", 1000)
    assert [f.rule for f in result.findings] == ["file.byte-order-mark"]
    link = tmp_path / "link.yaml"
    link.symlink_to(bom)
    assert [f.rule for f in load_document(link, "link.yaml", 1000).findings] == ["file.not-regular"]
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    assert [f.rule for f in load_document(folder, "dir.yaml", 1000).findings] == [
        "file.not-regular"
    ]


def test_a_file_read_in_short_pieces_is_read_whole_and_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.read
    calls: list[int] = []

    def short(fd: int, size: int) -> bytes:  # the kernel may return fewer bytes than asked
        calls.append(size)
        return real(fd, min(size, 7))

    monkeypatch.setattr(load.os, "read", short)
    path = tmp_path / "r.yaml"
    text = b"name: a\nunit: b\n" * 5
    path.write_bytes(text)
    assert load.read_bytes(path, "r.yaml", 1000) == (text, [])
    assert len(calls) > len(text) // 7  # it really came in pieces
    data, findings = load.read_bytes(str(path), "r.yaml", len(text) - 1)
    assert data is None and [f.rule for f in findings] == ["file.too-large"]
    assert load.read_bytes(str(path), "r.yaml", len(text)) == (text, [])  # exactly at the cap
    monkeypatch.setattr(load.os, "read", real)
    # A file that grows between its size check and its read is read on, up to the cap.
    real_lstat = os.lstat
    monkeypatch.setattr(
        load.os, "lstat", lambda p: os.stat_result((*real_lstat(p)[:6], 3, 0, 0, 0))
    )
    assert load.os.lstat(path).st_size == 3
    assert load.read_bytes(path, "r.yaml", 1000) == (text, [])
    data, findings = load.read_bytes(path, "r.yaml", 20)
    assert data is None and [f.message for f in findings] == ["more than the cap of 20 bytes"]


def test_alias_bomb_is_refused_without_expanding(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    result = parse_text(Path("bomb"), "bomb", "\n".join(lines) + "\n", [])
    assert result.document is None
    assert {f.rule for f in result.findings} == {"yaml.anchor", "yaml.alias"}


# --- one loaded inventory, from a folder or from git objects ----------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.edu", *args],
        check=True,
        capture_output=True,
    )


def test_a_git_tree_loads_exactly_as_its_checkout(tmp_path: Path) -> None:
    """Links, misplaced files, nested folders and oversized files: the same findings."""

    repo = tmp_path / "repo"
    root = repo / "inventory"
    shutil.copytree(Path(__file__).resolve().parent.parent / "inventory", root)
    devices = root / "devices"
    (devices / "libraries" / "linked.yaml").symlink_to("lib-hodges-3f-copier.yaml")
    (devices / "loose.yaml").write_text("name: loose\n")
    (devices / "libraries" / "notes.txt").write_text("x\n")
    (devices / "libraries" / "deeper").mkdir()
    (devices / "libraries" / "deeper" / "x.yaml").write_text("name: x\n")
    (devices / "libraries" / "huge.yaml").write_text("# " + "x" * 70000 + "\n")
    (devices / "unit-link").symlink_to("libraries")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "odd inventory")

    day = dt.date(2026, 11, 29)
    folder = pipeline.load(root, day, shown="inventory")
    blobs = gitrepo.read_tree(repo, "HEAD", "inventory")
    tree = pipeline.load(root, day, shown="inventory", source=TreeSource(root, blobs))
    rules = {f.rule for f in folder.findings}
    assert {"file.not-regular", "file.misplaced", "file.too-large"} <= rules  # positive control
    assert [f.as_text() for f in tree.findings] == [
        f.as_text() for f in folder.findings if f.rule != "schemas.stale"
    ]
    assert tree.record_paths == folder.record_paths
    assert [repr(d) for d in tree.devices] == [repr(d) for d in folder.devices]


def test_findings_are_shown_under_the_inventory_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    root = tmp_path / "inventory"
    shutil.copytree(Path(__file__).resolve().parent.parent / "inventory", root)
    record = root / "devices" / "libraries" / "lib-hodges-3f-copier.yaml"
    record.write_text(record.read_text().replace("kind: copier", "kind: toaster"))
    monkeypatch.chdir(tmp_path / "inventory" / "devices")
    loaded = pipeline.load(root, dt.date(2026, 11, 29), shown="inv")
    paths = {f.path for f in loaded.findings if f.rule == "schema.enum"}
    assert paths == {"inv/devices/libraries/lib-hodges-3f-copier.yaml"}
    assert loaded.relative("inv/devices/libraries/x.yaml") == "devices/libraries/x.yaml"


_SCALARS = ["yes", "no", "on", "true", "null", "~", "", "1.0", "1e3", "0x1F", "010", "2026-11-29"]


def test_remembered_tags_are_the_tags_the_resolver_computes() -> None:
    """The loader remembers the tag of short scalars; a second read must see the same tags."""
    text = "".join(f"k{i}: {value}\nq{i}: '{value}'\n" for i, value in enumerate(_SCALARS))
    load._RESOLVED.clear()
    plain = yaml.compose(text, Loader=load._Base)
    first = yaml.compose(text, Loader=load._Loader)
    remembered = len(load._RESOLVED)
    again = yaml.compose(text, Loader=load._Loader)
    assert remembered > len(_SCALARS)  # the memo is really used on the second read
    tags = [(k.tag, v.tag) for k, v in plain.value]
    assert [(k.tag, v.tag) for k, v in first.value] == tags
    assert [(k.tag, v.tag) for k, v in again.value] == tags
    assert {v.tag for _, v in plain.value} > {"tag:yaml.org,2002:str"}  # varied tags
