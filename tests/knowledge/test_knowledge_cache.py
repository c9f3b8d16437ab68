"""The knowledge cache (cds.knowledge.cache) gives exactly what reading the files gives, is read afresh
when any knowledge file changes, never keeps knowledge with a fault, and trusts no entry another user
could have written."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cds.errors import KnowledgeError
from cds.knowledge import loader
from cds.settings import CoreSettings
from pgx_paths import REPO


def load_knowledge(root: Path, **options):
    """As a face loads it: the cache folder is the one the settings read from the environment name."""
    return loader.load_knowledge(root, cache_dir=CoreSettings.from_env().knowledge_cache_dir(), **options)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CDS_KNOWLEDGE_CACHE", str(folder))
    return folder


@pytest.fixture
def files_read(monkeypatch) -> list[Path]:
    """Each time the knowledge files themselves are read (not the cache), the root read."""
    reads: list[Path] = []
    real = loader._load_files

    def counting(root, *, cross_link):
        reads.append(root)
        return real(root, cross_link=cross_link)

    monkeypatch.setattr(loader, "_load_files", counting)
    return reads


@pytest.fixture
def knowledge_copy(tmp_path) -> Path:
    root = tmp_path / "knowledge"
    for folder in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("knowledge-*.pickle"))


def _described(kb) -> list:
    return [*kb.genes.values(), *kb.guidelines.values(), *kb.rules, *kb.services,
            *(rec for g in kb.guidelines.values() for rec in g.recommendations)]


def test_cached_knowledge_equals_the_files_read_afresh(cache, files_read) -> None:
    fresh = load_knowledge(REPO, use_cache=False)
    load_knowledge(REPO)                          # reads the files, keeps an entry
    cached = load_knowledge(REPO)
    assert files_read == [REPO, REPO]              # the uncached load and the first cached one; not the third
    assert len(_entries(cache)) == 1

    assert cached.version == fresh.version and cached.root == fresh.root
    for kind in ("genes", "guidelines"):
        assert {k: v.model_dump() for k, v in getattr(cached, kind).items()} == \
               {k: v.model_dump() for k, v in getattr(fresh, kind).items()}
    assert [r.model_dump() for r in cached.rules] == [r.model_dump() for r in fresh.rules]
    assert [s.model_dump() for s in cached.services] == [s.model_dump() for s in fresh.services]
    assert [str(n) for n in cached.notices] == [str(n) for n in fresh.notices]
    # every file:line a validator message or a card's provenance can name survives the cache
    assert [cached.where(obj) for obj in _described(cached)] == [fresh.where(obj) for obj in _described(fresh)]
    assert len(cached.origins) == len(fresh.origins)
    assert cached.interpreters.keys() == fresh.interpreters.keys()
    assert cached.interpreters["CYP2C19"].from_diplotype("*2/*17") == fresh.interpreters["CYP2C19"].from_diplotype("*2/*17")


def test_a_changed_knowledge_file_is_read_again(cache, files_read, knowledge_copy) -> None:
    rule_file = knowledge_copy / "rules" / "antiplatelets.yaml"
    before = load_knowledge(knowledge_copy)
    text = rule_file.read_text()
    old = "avoid; use prasugrel or ticagrelor if no contraindication"
    assert old in text
    rule_file.write_text(text.replace(old, "avoid; use prasugrel or ticagrelor unless contraindicated"))
    after = load_knowledge(knowledge_copy)

    assert files_read == [knowledge_copy, knowledge_copy]
    summaries = [a.summary for r in after.rules if r.id == "clopidogrel-cyp2c19" for a in r.adjustments]
    assert any("unless contraindicated" in s for s in summaries)
    assert after.version != before.version
    assert len(_entries(cache)) == 2


def test_the_same_files_elsewhere_are_a_separate_entry(cache, files_read, knowledge_copy) -> None:
    """A knowledge base names its root (messages point into it): another folder is another entry."""
    assert load_knowledge(knowledge_copy).root == knowledge_copy
    assert load_knowledge(REPO).root == REPO
    assert len(files_read) == 2


def test_the_same_folder_named_another_way_keeps_its_own_name(cache, files_read, knowledge_copy,
                                                              monkeypatch) -> None:
    """A relative root read from one working directory must not come back, from the cache, as the root
    of a process that named the folder by its absolute path (it would point elsewhere there)."""
    monkeypatch.chdir(knowledge_copy.parent)
    assert load_knowledge(Path("knowledge")).root == Path("knowledge")
    assert load_knowledge(knowledge_copy).root == knowledge_copy
    assert len(files_read) == 2


def test_knowledge_with_a_fault_is_never_kept(cache, files_read, knowledge_copy) -> None:
    rule_file = knowledge_copy / "rules" / "antiplatelets.yaml"
    rule_file.write_text(rule_file.read_text().replace("guideline: cpic-clopidogrel-cyp2c19",
                                                       "guideline: cpic-no-such-guideline"))
    for _ in range(2):
        with pytest.raises(KnowledgeError, match="no-such-guideline"):
            load_knowledge(knowledge_copy)
    assert files_read == [knowledge_copy, knowledge_copy]
    assert _entries(cache) == []


def test_a_damaged_entry_is_replaced(cache, files_read) -> None:
    load_knowledge(REPO)
    [entry] = _entries(cache)
    entry.write_bytes(b"not a pickle")
    assert load_knowledge(REPO).version == load_knowledge(REPO, use_cache=False).version
    assert pickle.loads(entry.read_bytes()).version == load_knowledge(REPO).version
    assert len(files_read) == 3       # first load, after the damage, use_cache=False; the last from the entry


@pytest.mark.parametrize("writable", ["file", "folder"])
def test_an_entry_others_could_write_is_not_trusted(cache, files_read, writable) -> None:
    """A pickle runs code when loaded: an entry someone else could have put there is never unpickled."""
    load_knowledge(REPO)
    [entry] = _entries(cache)
    entry.write_bytes(pickle.dumps({"planted": True}))
    (entry if writable == "file" else cache).chmod(0o666 if writable == "file" else 0o777)
    kb = load_knowledge(REPO)
    assert not isinstance(kb, dict) and kb.rules
    assert len(files_read) == 2


def test_off_keeps_nothing(tmp_path, monkeypatch, files_read) -> None:
    monkeypatch.setenv("CDS_KNOWLEDGE_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    load_knowledge(REPO)
    load_knowledge(REPO)
    assert len(files_read) == 2 and not any(tmp_path.rglob("knowledge-*"))


def test_an_unpickled_knowledge_base_still_says_where_each_rule_is_written() -> None:
    """The dask workers receive the knowledge pickled; validator messages and provenance need `where`."""
    kb = load_knowledge(REPO, use_cache=False)
    copy = pickle.loads(pickle.dumps(kb))
    assert [copy.where(obj) for obj in _described(copy)] == [kb.where(obj) for obj in _described(kb)]


def test_validate_reads_the_files_not_the_cache(cache, knowledge_copy) -> None:
    """`cds validate` is the pharmacist's check of what is on disk: an entry under the very key of the
    files (planted, or left by a cds of the same source) cannot answer for them."""
    from cds.fhir.mappings import DEFAULT_PATH
    from cds.knowledge.cache import cache_key

    good = load_knowledge(knowledge_copy)
    rule_file = knowledge_copy / "rules" / "antiplatelets.yaml"
    rule_file.write_text(rule_file.read_text().replace("guideline: cpic-clopidogrel-cyp2c19", "guideline: nope"))
    planted = cache / f"knowledge-{cache_key(knowledge_copy, (DEFAULT_PATH,))}.pickle"
    planted.write_bytes(pickle.dumps(good))
    assert load_knowledge(knowledge_copy).version == good.version     # the cache itself would take it

    env = {**os.environ, "CDS_KNOWLEDGE_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-m", "cds.cli", "validate", str(knowledge_copy)],
                            env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and "nope" in result.stderr, result.stdout + result.stderr
