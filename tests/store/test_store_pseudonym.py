"""The audit key: from the environment, or a development key made once and kept."""
from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import stat

import pytest

from cds.errors import CdsError
from cds.settings import CoreSettings
from cds.store.pseudonym import PatientHasher, load_audit_key


def _key_as_a_face_loads_it() -> bytes:
    """The settings read from the environment (as each face does once), handed to the store."""
    settings = CoreSettings.from_env()
    return load_audit_key(settings.audit_key, settings.audit_key_file)


def test_the_hash_is_hmac_sha256_under_the_site_key():
    key = b"k" * 32
    assert PatientHasher(key)("pat-1") == hmac.new(key, b"pat-1", hashlib.sha256).hexdigest()
    assert PatientHasher(key)("pat-1") != PatientHasher(b"j" * 32)("pat-1")


def test_the_environment_key_wins_and_must_be_long(monkeypatch, tmp_path):
    monkeypatch.setenv("CDS_AUDIT_KEY_FILE", str(tmp_path / "audit-key"))
    monkeypatch.setenv("CDS_AUDIT_KEY", "s" * 40)
    assert _key_as_a_face_loads_it() == b"s" * 40
    assert not (tmp_path / "audit-key").exists()
    monkeypatch.setenv("CDS_AUDIT_KEY", "short")
    with pytest.raises(CdsError, match="at least 32 characters"):
        _key_as_a_face_loads_it()


def test_without_a_key_a_development_key_is_made_once_and_kept_private(monkeypatch, tmp_path):
    monkeypatch.delenv("CDS_AUDIT_KEY", raising=False)
    path = tmp_path / "var" / "audit-key"
    monkeypatch.setenv("CDS_AUDIT_KEY_FILE", str(path))
    first = _key_as_a_face_loads_it()
    assert len(first) == 64 and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _key_as_a_face_loads_it() == first  # a restart hashes patients the same way


def _load_in_child(path, results):
    import os
    os.environ.pop("CDS_AUDIT_KEY", None)
    os.environ["CDS_AUDIT_KEY_FILE"] = path
    results.put(_key_as_a_face_loads_it())


def test_processes_starting_together_agree_on_one_development_key(tmp_path):
    path = str(tmp_path / "audit-key")
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_load_in_child, args=(path, results)) for _ in range(6)]
    for child in children:
        child.start()
    keys = {results.get(timeout=30) for _ in children}
    for child in children:
        child.join(30)
    assert len(keys) == 1


def test_patient_x_and_its_references_get_one_pseudonym():
    from cds.store.pseudonym import PatientHasher, normalised_patient_id

    hasher = PatientHasher(b"k" * 32)
    forms = ["pat-9", "Patient/pat-9", "https://ehr.example.org/fhir/Patient/pat-9", "Patient/pat-9/_history/3",
             " Patient/pat-9 "]
    assert {normalised_patient_id(f) for f in forms} == {"pat-9"}
    assert len({hasher(f) for f in forms}) == 1
    assert hasher("pat-9") != hasher("pat-90")
    assert normalised_patient_id("Group/7") == "Group/7"          # not a patient reference: left alone


def test_scrubbing_a_patient_reference_also_removes_the_bare_id():
    from cds.store.records import scrubber

    scrub = scrubber("Patient/pat-9")
    assert scrub("Observation/pat-9-cyp2c19 for Patient/pat-9") == "Observation/[patient]-cyp2c19 for Patient/[patient]"
    assert scrub("CYP2C19 pat-90") == "CYP2C19 pat-90"


def test_scrubbing_removes_exactly_what_the_word_boundary_rule_says():
    """The scrubber's rule, written as the regular expression it replaces: the id, not next to an
    ASCII letter or digit, left to right without overlaps. Random texts over an alphabet that makes
    near misses, overlaps and repeats common."""
    import re

    from hypothesis import given, settings, strategies as st

    from cds.store.records import PATIENT_PLACEHOLDER, scrubber

    alphabet = st.sampled_from(list("aab1-/ ./é_"))

    @settings(max_examples=400, deadline=None)
    @given(st.text(alphabet, min_size=1, max_size=4), st.text(alphabet, max_size=40))
    def check(patient_id, text):
        bare = patient_id.strip()
        if not bare or bare.startswith("Patient/"):
            return
        expected = re.sub(rf"(?<![A-Za-z0-9]){re.escape(bare)}(?![A-Za-z0-9])", PATIENT_PLACEHOLDER, text)
        assert scrubber(bare)(text) == expected

    check()
