"""`cds policy` and `cds user` as an operator runs them, on SQLite and on PostgreSQL (CI runs tests/store
against both): the repository's rules/ are version 1 of a new database; a proposal is refused with
file:line when a file is invalid or a test case fails; its author cannot approve it; approval makes it
active; history shows who, why, when and the diff; rollback makes the earlier version active again;
export writes the active version for git. Passwords never reach the database in clear."""
from __future__ import annotations

import json

from pgx_paths import REPO
from policy_support import NEW_WORDING, OLD_WORDING, PASSWORDS, add_people, antiplatelets, cds, line_of
from store_fixtures import backend, db  # noqa: F401 - pytest fixtures


def test_propose_approve_history_rollback_export(backend, db, tmp_path):
    url = backend.direct_url
    add_people(url, ("alice", "bob", "vera"))
    edited = antiplatelets(tmp_path / "edit", expect="prefer prasugrel")

    viewer = cds(url, "policy", "propose", str(edited), "--author", "vera", "--reason", "shorter wording")
    assert viewer.returncode == 1 and "vera" in viewer.stderr and "author" in viewer.stderr

    proposed = cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "shorter wording", "--json")
    assert proposed.returncode == 0, proposed.stderr
    number = json.loads(proposed.stdout)["id"]
    assert number == 2                     # version 1: the repository's rules/, seeded on first use

    # alice, made an approver meanwhile, still cannot sign off her own change
    assert cds(url, "user", "role", "alice", "approver").returncode == 0
    own = cds(url, "policy", "approve", str(number), "--approver", "alice")
    assert own.returncode == 1 and "cannot approve" in own.stderr

    approved = cds(url, "policy", "approve", str(number), "--approver", "bob", "--comment", "agreed at P&T")
    assert approved.returncode == 0, approved.stderr

    history = json.loads(cds(url, "policy", "history", "--json").stdout)
    assert history["active_version"] == number
    latest = history["versions"][0]
    assert (latest["version"], latest["author"], latest["decided_by"], latest["reason"], latest["decision_comment"]) == \
        (number, "alice", "bob", "shorter wording", "agreed at P&T")
    assert f"-        summary: '{{Drug}}: {{results}} — {OLD_WORDING}'" in latest["diff"]
    assert f"+        summary: '{{Drug}}: {{results}} — {NEW_WORDING}'" in latest["diff"]
    assert latest["effective_at"] and latest["decided_at"]
    assert history["versions"][1]["author"] == "repository"

    text = cds(url, "policy", "history").stdout
    assert f"version {number} (active): approved, proposed by alice" in text and "approve by bob: agreed at P&T" in text

    exported = cds(url, "policy", "export", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert NEW_WORDING in (tmp_path / "out/rules/antiplatelets.yaml").read_text()
    assert (tmp_path / "out/rules/default.yaml").read_text() == (REPO / "rules/default.yaml").read_text()

    rolled = cds(url, "policy", "rollback", "--by", "bob", "--reason", "prescribers asked for the old wording")
    assert rolled.returncode == 0, rolled.stderr and "version 1 is active again" in rolled.stdout
    history = json.loads(cds(url, "policy", "history", "--json").stdout)
    assert history["active_version"] == 1
    first = history["versions"][-1]
    assert any(e["action"] == "rollback" and e["actor"] == "bob" and e["comment"] == "prescribers asked for the old wording"
               for e in first["events"])
    cds(url, "policy", "export", str(tmp_path / "back"))
    assert OLD_WORDING in (tmp_path / "back/rules/antiplatelets.yaml").read_text()

    # passwords: Argon2id hashes only, never the password
    for name, stored in db.rows("SELECT username, password_hash FROM cds_account"):
        assert stored.startswith("$argon2id$") and PASSWORDS[name] not in stored


def test_an_invalid_proposal_is_refused_with_file_and_line(backend, tmp_path):
    url = backend.direct_url
    add_people(url, ("alice",))
    too_long = NEW_WORDING + ", and page the cardiology pharmacist on extension 4411 before anything else"
    edited = antiplatelets(tmp_path / "long", new=too_long)
    refused = cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "longer")
    assert refused.returncode == 1
    assert f"rules/antiplatelets.yaml:{line_of(edited, too_long)}:" in refused.stderr and "at most 139" in refused.stderr

    broken = tmp_path / "broken" / "antiplatelets.yaml"
    broken.parent.mkdir()
    broken.write_text(edited.read_text().replace("indicator: critical\n        summary", "indicator: urgent\n        summary"))
    refused = cds(url, "policy", "propose", str(broken), "--author", "alice", "--reason", "typo")
    assert refused.returncode == 1 and f"rules/antiplatelets.yaml:{line_of(broken, 'indicator: urgent')}:" in refused.stderr


def test_a_proposal_whose_test_case_fails_is_refused(backend, tmp_path):
    url = backend.direct_url
    add_people(url, ("alice",))
    edited = antiplatelets(tmp_path / "edit")          # wording changed, test case still expects the old words
    refused = cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "shorter")
    assert refused.returncode == 1
    case = line_of(edited, "- name: poor metabolizer gets a critical card with both alternatives")
    assert f"rules/antiplatelets.yaml:{case}:" in refused.stderr
    assert "lacks 'prasugrel or ticagrelor'" in refused.stderr
    assert json.loads(cds(url, "policy", "history", "--json").stdout)["versions"][0]["version"] == 1   # nothing saved


def test_reject_needs_another_approver_and_a_comment(backend, tmp_path):
    url = backend.direct_url
    add_people(url, ("alice", "bob"))
    edited = antiplatelets(tmp_path / "edit", expect="prefer prasugrel")
    number = json.loads(cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "r", "--json").stdout)["id"]
    assert cds(url, "policy", "reject", str(number), "--approver", "alice", "--comment", "no").returncode == 1
    assert cds(url, "policy", "reject", str(number), "--approver", "bob", "--comment", "keep the FDA wording").returncode == 0
    again = cds(url, "policy", "approve", str(number), "--approver", "bob")
    assert again.returncode == 1 and "rejected already" in again.stderr
    history = json.loads(cds(url, "policy", "history", "--json").stdout)
    assert history["active_version"] == 1 and history["versions"][0]["status"] == "rejected"


def test_impact_counts_changed_cards_per_drug_and_rule(backend, tmp_path):
    """The same patients under both policies: intermediate metabolizers on clopidogrel get the new wording."""
    url = backend.direct_url
    add_people(url, ("alice",))
    old = "avoid standard dose; prefer prasugrel or ticagrelor"
    edited = antiplatelets(tmp_path / "edit", old=old, new="avoid the standard dose; prefer prasugrel or ticagrelor")
    number = json.loads(cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "r", "--json").stdout)["id"]
    result = cds(url, "policy", "impact", str(number), "--patients", "1000", "--json")
    assert result.returncode == 0, result.stderr
    impact = json.loads(result.stdout)
    assert impact["patients"] == 1000 and "synthetic" in impact["cohort"]
    changed = [c for c in impact["changes"] if c["drug"] == "clopidogrel"]
    assert changed and all(c["kind"] == "changed" and c["rule"] == "clopidogrel-cyp2c19" for c in changed)
    example = changed[0]["examples"][0]
    assert old in example["before"]["summary"] and "avoid the standard dose" in example["after"]["summary"]
    assert "Intermediate Metabolizer" in example["results"]
    assert impact["total"] == {"added": 0, "removed": 0, "changed": changed[0]["count"]}


def test_approval_at_a_stated_time_takes_effect_then(backend, tmp_path):
    from datetime import datetime, timedelta, timezone

    url = backend.direct_url
    add_people(url, ("alice", "bob"))
    edited = antiplatelets(tmp_path / "edit", expect="prefer prasugrel")
    number = json.loads(cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "r", "--json").stdout)["id"]
    when = datetime.now(timezone.utc) + timedelta(days=1)
    assert cds(url, "policy", "approve", str(number), "--approver", "bob", "--at", when.isoformat()).returncode == 0
    history = json.loads(cds(url, "policy", "history", "--json").stdout)
    assert history["active_version"] == 1                        # not yet
    latest = history["versions"][0]
    assert latest["status"] == "approved" and datetime.fromisoformat(latest["effective_at"]) == when
