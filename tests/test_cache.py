"""The content-addressed cache: same results as without it, and never trusted blindly.

The property test applies random sequences of edits (record content, renames,
moves between units, site/units/NetReg changes, a schema change, a version
bump, a new day, a corrupted or forged cache) to a copy of the example
inventory and asserts after every step that a cached run gives exactly the
findings, models and artifacts of an uncached run.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import random
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygate import cache as cache_
from relaygate import compile as compile_
from relaygate import pipeline, schema
from relaygate.cache import Cache
from relaygate.errors import VerificationFailed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventory"
DAY = dt.date(2026, 11, 29)
SECRET = b"k" * 32


def _outcome(root: Path, as_of: dt.date, store: Cache | None) -> tuple[Any, ...]:
    """Everything a run produces that a user or a deploy sees, in comparable form."""
    loaded = pipeline.load(root, as_of, shown="inventory", store=store)
    try:
        artifacts = compile_.build_loaded(loaded, as_of, None, store=store).artifacts
    except VerificationFailed as error:
        artifacts = {"verification failed": str(error)}
    return (
        [f.as_text() for f in loaded.findings],
        [repr(d) for d in loaded.devices],
        sorted(loaded.lapsed.items()),
        {k: (v.raw, v.clean) for k, v in loaded.files.items()},
        artifacts,
    )


def _clear_schema_caches() -> None:
    schema.validator.cache_clear()
    schema.fast_validator.cache_clear()
    pipeline._schema_digest.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_schemas() -> Iterator[None]:
    _clear_schema_caches()
    yield
    _clear_schema_caches()


# --- edits -------------------------------------------------------------------------


def _records(root: Path) -> list[Path]:
    return sorted((root / "devices").glob("*/*.yaml"))


def _rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text("utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")


_VALUES = ["10.20.30.99", "10.20.30.41", "nobody@lib.example.edu", "x", "", None, 7, "retired"]


def edit_record(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    path = rng.choice(_records(root))
    field = rng.choice(["address", "fqdn", "senders", "status", "model", "volume_per_day"])
    value = rng.choice(_VALUES)

    def change(data: dict[str, Any]) -> None:
        data[field] = [value] if field == "senders" else value

    _rewrite(path, change)


def edit_comment(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    path = rng.choice(_records(root))
    path.write_text(path.read_text("utf-8") + f"# note {rng.random()}\n", "utf-8")


def rename(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    path = rng.choice(_records(root))
    path.rename(path.with_name(f"renamed-{rng.randrange(1000)}.yaml"))


def move_unit(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    path = rng.choice(_records(root))
    units = sorted(p.name for p in (root / "devices").iterdir() if p.is_dir())
    target = root / "devices" / rng.choice(units) / path.name
    if not target.exists():
        path.rename(target)


def edit_site(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    def change(data: dict[str, Any]) -> None:
        choice = rng.randrange(3)
        if choice == 0:
            data["policy"]["max_exception_days"] = rng.choice([30, 365, 400])
        elif choice == 1 and data["sender_domains"]:
            data["sender_domains"].pop(rng.randrange(len(data["sender_domains"])))
        else:
            data["mod_segments"][0]["prefixes"] = ["10.20.31.0/24"]

    _rewrite(root / "site.yaml", change)


def edit_units(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    def change(data: dict[str, Any]) -> None:
        unit = data["units"][rng.choice(sorted(data["units"]))]
        if rng.random() < 0.5 and unit["approvers"]:
            unit["approvers"].pop(0)
        else:
            unit["sender_domains"] = ["lib.example.edu"]

    _rewrite(root / "units.yaml", change)


def edit_netreg(root: Path, rng: random.Random, _state: dict[str, Any]) -> None:
    def change(data: dict[str, Any]) -> None:
        reservations = data["reservations"]
        index = rng.randrange(len(reservations))
        if rng.random() < 0.5:
            reservations.pop(index)
        else:
            reservations[index]["fqdn"] = "moved.example.edu"

    _rewrite(root / "netreg.yaml", change)


def edit_schema(_root: Path, rng: random.Random, state: dict[str, Any]) -> None:
    """The installed schema changes (as with an upgrade): names get shorter limits."""
    state["schema_limit"] = rng.choice([12, 20, None])


def bump_version(_root: Path, rng: random.Random, state: dict[str, Any]) -> None:
    state["version"] = f"9.{rng.randrange(100)}"


def next_day(_root: Path, rng: random.Random, state: dict[str, Any]) -> None:
    state["as_of"] = DAY + dt.timedelta(days=rng.choice([1, 200, 400]))


def corrupt_cache(_root: Path, rng: random.Random, state: dict[str, Any]) -> None:
    database = state["folder"] / "cache.sqlite3"
    if not database.exists():
        return
    if rng.random() < 0.5:
        database.write_bytes(b"not a database" * rng.randrange(1, 100))
        return
    db = sqlite3.connect(database)
    try:
        # A forged entry: an existing key's value replaced by "clean, no findings".
        row = db.execute("SELECT key, mac FROM entries LIMIT 1").fetchone()
        if row is not None:
            db.execute(
                "UPDATE entries SET value = ? WHERE key = ?",
                (json.dumps({"findings": [], "raw": {}, "data": {}, "clean": True}), row[0]),
            )
            db.commit()
    finally:
        db.close()


EDITS = [
    edit_record,
    edit_comment,
    rename,
    move_unit,
    edit_site,
    edit_units,
    edit_netreg,
    edit_schema,
    bump_version,
    next_day,
    corrupt_cache,
]


def _patched_schema(limit: int | None) -> Callable[[schema.SchemaName], str]:
    original = schema.schema_text

    def text(name: schema.SchemaName) -> str:
        if name != "device" or limit is None:
            return original(name)
        document = json.loads(original(name))
        document["properties"]["name"]["maxLength"] = limit
        return json.dumps(document)

    return text


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 2**32)), min_size=1, max_size=6)
)
def test_cached_runs_equal_uncached_runs(
    monkeypatch: pytest.MonkeyPatch,
    steps: list[tuple[Callable[[Path, random.Random, dict[str, Any]], None], int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inventory"
        shutil.copytree(EXAMPLE, root)
        # Editor schemas beside the inventory, one of them stale: a finding from
        # outside the inventory folder that cached runs must report too.
        shutil.copytree(ROOT / "schemas", Path(tmp) / "schemas")
        (Path(tmp) / "schemas" / "units.schema.json").write_text("{}", "utf-8")
        folder = Path(tmp) / "cache"
        folder.mkdir()
        state: dict[str, Any] = {"folder": folder, "as_of": DAY, "version": "0.1.0"}
        state["schema_limit"] = None
        with monkeypatch.context() as patch:
            for edit, seed in [(edit_comment, 0), *steps]:
                edit(root, random.Random(seed), state)
                patch.setattr(cache_, "__version__", state["version"])
                patch.setattr(schema, "schema_text", _patched_schema(state["schema_limit"]))
                _clear_schema_caches()
                expected = _outcome(root, state["as_of"], None)
                for _ in range(2):  # the first run may fill the cache, the second reads it
                    store = Cache(folder, SECRET)
                    try:
                        got = _outcome(root, state["as_of"], store)
                        summary = pipeline.summarize(
                            root, state["as_of"], store=store, shown="inventory"
                        )
                    finally:
                        store.close()
                    assert got == expected, f"after {edit.__name__}"
                    # validate's answer, read back whole when nothing changed
                    assert [f.as_text() for f in summary[0]] == expected[0]
                    assert summary[1] == 3 + len(_records(root))


# --- the cache itself ---------------------------------------------------------------------


def test_a_second_run_reads_the_cache_and_a_changed_file_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    folder = tmp_path / "cache"
    folder.mkdir()
    first = Cache(folder, SECRET)
    pipeline.load(root, DAY, store=first)
    first.close()
    assert first.hits == 0

    second = Cache(folder, SECRET)
    pipeline.load(root, DAY, store=second)
    second.close()
    assert second.misses == 0
    # Each file, and the checks' whole answer (their inputs are all unchanged).
    assert second.hits == 3 + len(_records(root)) + 1

    path = _records(root)[0]
    path.write_text(path.read_text("utf-8").replace("status: active", "status: bogus"), "utf-8")
    third = Cache(folder, SECRET)
    changed = pipeline.load(root, DAY, shown="inventory", store=third)
    third.close()
    # The changed file, its record checks (a status that fails its schema leaves the
    # checks that do not read the status to run) and the whole answer.
    assert third.misses == 3
    assert any(f.rule == "schema.enum" for f in changed.findings)


def test_an_entry_under_another_key_is_foreign_and_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    mine = Cache(folder, SECRET)
    mine.put("a", {"x": 1})
    mine.close()
    assert Cache(folder, SECRET).get("a") == {"x": 1}  # positive control
    assert Cache(folder, b"o" * 32).get("a") is None  # written under someone else's key


def test_many_entries_read_at_once_are_each_their_own_value(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    writer = Cache(folder, SECRET)
    values: dict[str, Any] = {f"k{i}": {"name": f"r{i}", "list": [i, "x,y]"]} for i in range(700)}
    values["null"] = None
    for key, value in values.items():
        writer.put(key, value)
    writer.close()
    # Two entries that are not one JSON document each, under a valid MAC (only the key's
    # owner can write these): together they would parse as one array of the right length.
    db = sqlite3.connect(folder / "cache.sqlite3", isolation_level=None)
    for key, text in (("bad1", "1,2"), ("bad2", "")):
        db.execute("INSERT INTO entries VALUES (?, ?, ?)", (key, writer._mac(key, text), text))
    db.close()
    reader = Cache(folder, SECRET)
    got = reader.get_many([*values, "bad1", "bad2", "absent", "k3"])
    assert got == {k: v for k, v in values.items() if v is not None}
    assert reader.hits == 701  # the null entry is a hit that holds nothing
    assert reader.misses == 3  # bad1, bad2, absent
    # A value read once is served again from memory, the same object.
    assert reader.get_many(["k1"])["k1"] is got["k1"]
    assert reader.get("k1") is got["k1"]


def test_a_corrupt_database_is_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "cache.sqlite3").write_bytes(b"\x00garbage" * 500)
    store = Cache(folder, SECRET)
    assert store.get("a") is None
    store.put("a", [1, 2])
    store.close()
    assert Cache(folder, SECRET).get("a") == [1, 2]


def test_a_link_where_the_cache_belongs_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A repository can carry a link named .relaygate (the cache is ignored, not forbidden).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "repo" / "inventory"
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root.parent / ".relaygate").symlink_to(elsewhere)
    where = cache_.location(root)
    assert where == tmp_path / "xdg" / "relaygate" / "cache"
    assert list(elsewhere.iterdir()) == []


def test_the_folder_beside_the_inventory_is_ignored_by_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "repo" / "inventory"
    root.mkdir(parents=True)
    assert cache_.location(root) == tmp_path / "repo" / ".relaygate" / "cache"
    assert (tmp_path / "repo" / ".relaygate" / ".gitignore").read_text() == "*\n"
    store = Cache.for_inventory(root)
    assert store is not None
    assert (tmp_path / "xdg" / "relaygate" / "secret.key").stat().st_mode & 0o077 == 0


def _writer(folder: str, start: int) -> None:
    store = Cache(Path(folder), SECRET)
    for index in range(start, start + 300):
        store.put(f"k{index}", index)
    store.close()


def test_two_runs_writing_at_once_leave_every_entry_readable(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(folder), s)) for s in (0, 150)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = Cache(folder, SECRET)
    values = store.get_many([f"k{i}" for i in range(450)])
    assert values == {f"k{i}": i for i in range(450)}


def test_no_cache_writes_nothing(tmp_path: Path, run_cli: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "repo" / "inventory"
    shutil.copytree(EXAMPLE, root)
    result = run_cli("validate", "--inventory", str(root), "--as-of", "2026-11-29", "--no-cache")
    assert result.code == 0, result
    assert not (tmp_path / "repo" / ".relaygate").exists()
    cached = run_cli("validate", "--inventory", str(root), "--as-of", "2026-11-29")
    assert cached.code == 0, cached
    assert (tmp_path / "repo" / ".relaygate" / "cache" / "cache.sqlite3").is_file()
    assert cached.stdout == result.stdout


def test_a_cache_over_its_size_cap_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    store = Cache(folder, SECRET)
    store.put("a", "x" * 10000)
    store.close()
    assert Cache(folder, SECRET).get("a") == "x" * 10000  # under the cap: kept
    monkeypatch.setattr(cache_, "MAX_BYTES", 16384)  # under the full file, over a fresh one
    again = Cache(folder, SECRET)
    assert again.get("a") is None
    again.put("b", 1)
    again.close()
    assert Cache(folder, SECRET).get("b") == 1


def test_unchanged_inputs_read_the_checks_answer_back_and_any_change_runs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    path = _records(root)[0]
    path.write_text(path.read_text("utf-8") + "bogus_field: 1\n", "utf-8")  # a finding
    folder = tmp_path / "cache"
    folder.mkdir()
    expected = pipeline.load(root, DAY, shown="inventory")
    assert expected.findings  # something to read back
    first = Cache(folder, SECRET)
    pipeline.load(root, DAY, shown="inventory", store=first)
    first.close()
    calls: list[str] = []
    real = pipeline.checks.inventory_checks

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("inventory_checks")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline.checks, "inventory_checks", counted)
    second = Cache(folder, SECRET)
    again = pipeline.load(root, DAY, shown="inventory", store=second)
    second.close()
    assert calls == []  # read back, not run
    assert again.findings == expected.findings
    assert again.inventory == expected.inventory
    # The same files on another day, or one byte changed: the checks run again.
    for change in ("day", "byte"):
        if change == "byte":
            path.write_text(path.read_text("utf-8") + "# a comment\n", "utf-8")
        day = DAY + dt.timedelta(days=1) if change == "day" else DAY
        third = Cache(folder, SECRET)
        pipeline.load(root, day, shown="inventory", store=third)
        third.close()
        assert calls.pop() == "inventory_checks", change


def _swap_first_legacy(text: str) -> str:
    return text.replace("10.20.30.41\t", "10.20.30.42\t", 1)


def _extra_nft_element(text: str) -> str:
    return text.replace(
        '10.20.30.41/32 comment "lib-hodges-3f-copier",',
        '10.20.30.41/32 comment "lib-hodges-3f-copier",\n\t\t\t10.20.30.43/32 comment "x",',
        1,
    )


def _extra_sender(text: str) -> str:
    return text + "attacker@example.com\tOK\n"


def _login_to_another_class(text: str) -> str:
    entries = [line for line in text.splitlines() if "\t" in line and not line.startswith("#")]
    first, second = (line.split("\t") for line in entries[-2:])
    return text.replace(f"{first[0]}\t{first[1]}", f"{first[0]}\t{second[1]}", 1)


@pytest.mark.parametrize(
    ("target", "wrong"),
    [
        ("postfix/legacy_clients", _swap_first_legacy),
        ("nftables/relay.nft", _extra_nft_element),
        ("postfix/senders/", _extra_sender),
        ("postfix/logins", _login_to_another_class),
    ],
)
def test_a_wrong_rendered_entry_is_refused_with_every_cache_warm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    wrong: Callable[[str], str],
) -> None:
    """A renderer bug on one entry is caught when everything else comes from the cache."""
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    folder = tmp_path / "cache"
    folder.mkdir()
    for _ in range(2):  # fill every entry, then read them back
        store = Cache(folder, SECRET)
        compile_.build(root, DAY, store=store)
        store.close()
    path = _records(root)[0]
    path.write_text(path.read_text("utf-8") + "# an edit: the artifacts are rendered again\n")
    real = compile_.render_all

    def buggy(*args: Any, **kwargs: Any) -> dict[str, str]:
        artifacts = real(*args, **kwargs)
        name = target if target in artifacts else min(p for p in artifacts if p.startswith(target))
        artifacts[name] = wrong(artifacts[name])
        assert artifacts[name] != real(*args, **kwargs)[name], "the bug did not apply"
        return artifacts

    store = Cache(folder, SECRET)
    try:
        good = compile_.build(root, DAY, store=store)  # positive control: warm and correct
        assert good.artifacts is not None
        path.write_text(path.read_text("utf-8") + "# another edit\n")
        monkeypatch.setattr(compile_, "render_all", buggy)
        with pytest.raises(VerificationFailed):
            compile_.build(root, DAY, store=store)
        assert store.hits > len(_records(root))  # the files and checks did come from the cache
    finally:
        store.close()


@pytest.mark.parametrize(("commit", "kept"), [("0" * 40, True), ("0" * 40 + "-dirty", False)])
def test_artifacts_of_a_tree_with_local_changes_are_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit: str, kept: bool
) -> None:
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    folder = tmp_path / "cache"
    folder.mkdir()
    renders: list[int] = []
    real = compile_.render_all

    def counted(*args: Any, **kwargs: Any) -> dict[str, str]:
        renders.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(compile_, "render_all", counted)
    for _ in range(2):
        store = Cache(folder, SECRET)
        built = compile_.build(root, DAY, commit, store=store)
        store.close()
        assert built.artifacts is not None
    assert len(renders) == (1 if kept else 2)


def test_two_compiles_one_record_apart_share_the_texts_they_render_alike(tmp_path: Path) -> None:
    """Artifacts are kept file by file under a hash of each text: the two sides of a
    plan read an unchanged file back as one string, and a missing text renders again."""
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    folder = tmp_path / "cache"
    folder.mkdir()
    record = _records(root)[0]
    before = record.read_text("utf-8")
    after = re.sub(r"(?m)^volume_per_day: .*$", "volume_per_day: 4321", before)
    assert before != after
    uncached = {}
    for text in (before, after):  # fill the cache, and the expected bytes
        record.write_text(text, "utf-8")
        store = Cache(folder, SECRET)
        compile_.build(root, DAY, "0" * 40, store=store)
        store.close()
        uncached[text] = compile_.build(root, DAY, "0" * 40).artifacts
    store = Cache(folder, SECRET)
    sides = []
    for text in (before, after):
        record.write_text(text, "utf-8")
        sides.append(compile_.build(root, DAY, "0" * 40, store=store).artifacts)
    store.close()
    assert sides == [uncached[before], uncached[after]]  # byte for byte
    old, new = sides
    assert old is not None and new is not None
    same = [path for path in old if old[path] == new[path]]
    changed = [path for path in old if old[path] != new[path]]
    assert same and changed
    assert all(old[path] is new[path] for path in same)  # one string for both
    # An index whose texts are not all there is not used: the compile renders again.
    db = sqlite3.connect(folder / "cache.sqlite3", isolation_level=None)
    deleted = db.execute(
        "DELETE FROM entries WHERE value = ?",
        (json.dumps(new[changed[0]], ensure_ascii=False, separators=(",", ":")),),
    ).rowcount
    db.close()
    assert deleted == 1
    renders: list[int] = []
    real = compile_.render_all

    def counted(*args: Any, **kwargs: Any) -> dict[str, str]:
        renders.append(1)
        return real(*args, **kwargs)

    store = Cache(folder, SECRET)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compile_, "render_all", counted)
        assert compile_.build(root, DAY, "0" * 40, store=store).artifacts == uncached[after]
        record.write_text(before, "utf-8")
        assert compile_.build(root, DAY, "0" * 40, store=store).artifacts == uncached[before]
    store.close()
    assert renders == [1]  # the side with every text kept is read back (positive control)


def test_one_edited_record_reruns_its_own_checks_only_and_a_site_edit_reruns_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    folder = tmp_path / "cache"
    folder.mkdir()
    store = Cache(folder, SECRET)
    pipeline.load(root, DAY, shown="inventory", store=store)
    store.close()
    checked: list[str] = []
    real = pipeline.checks.record_checks

    def counted(device: Any, *args: Any, **kwargs: Any) -> Any:
        checked.append(device.name)
        return real(device, *args, **kwargs)

    monkeypatch.setattr(pipeline.checks, "record_checks", counted)
    path = _records(root)[0]
    path.write_text(path.read_text("utf-8") + "# an edit\n", "utf-8")
    store = Cache(folder, SECRET)
    cached = pipeline.load(root, DAY, shown="inventory", store=store)
    store.close()
    assert checked == [path.stem]
    assert cached.findings == pipeline.load(root, DAY, shown="inventory").findings
    checked.clear()
    _rewrite(root / "site.yaml", lambda data: data["policy"].update(max_exception_days=400))
    store = Cache(folder, SECRET)
    pipeline.load(root, DAY, shown="inventory", store=store)
    store.close()
    assert sorted(checked) == sorted(p.stem for p in _records(root))


def test_the_code_digest_covers_the_templates_and_schemas_behind_folder_links() -> None:
    """In a checkout the package's resources are links to the project's folders: an edited
    template must change every cache key, so the digest reads through the links."""
    package = Path(cache_.__file__).resolve().parent
    hashed = {path.relative_to(package).as_posix() for path in cache_.code_files(package)}
    assert "cache.py" in hashed  # positive control: the code itself
    assert "resources/templates/nftables/relay.nft.j2" in hashed
    assert "resources/templates/postfwd/postfwd.cf.j2" in hashed
    assert any(name.startswith("resources/schemas/") for name in hashed)
    assert not any("__pycache__" in name for name in hashed)
