"""The decision core is below every face: the same PatientCase gives the same cards whichever face
built it, and no face reaches into another face's modules."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cds.decision import PatientCase, decide
from cds.engine import Engine
from cds.knowledge.loader import load_knowledge
from cds.pipeline import Advisor
from pgx_paths import REPO

PACKAGE = REPO / "cds"
FIXTURES = REPO / "tests" / "fixtures" / "fhir"


@pytest.fixture(scope="module")
def advisor() -> Advisor:
    return Advisor.build(Engine.from_knowledge(load_knowledge(REPO)))


def _clopidogrel_order() -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
        "subject": {"reference": "Patient/example"},
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "309362", "display": "clopidogrel 75 MG Oral Tablet"}]}}}]}


def test_a_case_of_real_fhir_json_gives_the_cpic_card(advisor: Advisor) -> None:
    genotype = json.loads((FIXTURES / "built" / "lab-cyp2c19-genotype-text.json").read_text())
    case = PatientCase(hook="order-sign", patient_ref="Patient/example", genomics=[genotype],
                       medications=[_clopidogrel_order()])
    advice = decide(advisor, case)
    assert [c.drug for c in advice.cards] == ["clopidogrel"]
    assert advice.facts.interpretations["CYP2C19"][0].phenotype in advice.cards[0].card["summary"]


def test_a_genomics_fetch_failure_is_said_not_silent(advisor: Advisor) -> None:
    case = PatientCase(hook="order-sign", patient_ref="Patient/example", medications=[_clopidogrel_order()],
                       errors={"genomics": "FHIR server answered HTTP 500"})
    cards = decide(advisor, case).cards
    assert len(cards) == 1 and "could not be completed" in cards[0].card["summary"]


def test_a_denying_consent_withholds_genotype_advice(advisor: Advisor) -> None:
    genotype = json.loads((FIXTURES / "built" / "lab-cyp2c19-genotype-text.json").read_text())
    deny = {"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/example"},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "dateTime": "2026-01-10",
            "provision": {"type": "deny", "securityLabel": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS"}]}}
    case = PatientCase(hook="order-sign", patient_ref="Patient/example", genomics=[genotype],
                       medications=[_clopidogrel_order()], consent=[deny])
    advice = decide(advisor, case)
    assert advice.cards == [] and advice.consent


def test_an_unknown_hook_is_refused(advisor: Advisor) -> None:
    with pytest.raises(ValueError):
        decide(advisor, PatientCase(hook="encounter-start", patient_ref="Patient/example"))


FACES = {"service": PACKAGE / "service", "workbench": PACKAGE / "workbench"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("face", sorted(FACES))
def test_no_face_imports_another_face(face: str) -> None:
    others = [f"cds.{name}" for name in FACES if name != face] + ["cds.cli"]
    offenders = []
    for path in FACES[face].rglob("*.py"):
        for module in _imports(path):
            # The service mounts the workbench blueprint when it is installed: composition, not use.
            if face == "service" and path.name == "app.py" and module == "cds.workbench":
                continue
            if any(module == o or module.startswith(o + ".") for o in others):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert offenders == []


def test_the_core_imports_no_face() -> None:
    faces = ("cds.service", "cds.workbench", "cds.cli")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("service", "workbench", "screen") or rel.name in ("cli.py", "__main__.py"):
            continue
        offenders += [f"{rel} imports {m}" for m in _imports(path) if m.startswith(faces)]
    assert offenders == []


def test_the_request_path_imports_no_importer() -> None:
    """Loading and cross-linking the knowledge (without the cache, so every check runs), building an
    Advisor and deciding a case import neither importer: they are offline tools (`cds import`). The
    knowledge import cycle loader → crosslink → reachability → dpwg_importer → importer → loader is gone."""
    import subprocess
    import sys

    code = ("import sys, json\n"
            "from pathlib import Path\n"
            "from cds.decision import PatientCase, decide\n"
            "from cds.engine import Engine\n"
            "from cds.knowledge.loader import load_knowledge\n"
            "from cds.pipeline import Advisor\n"
            f"advisor = Advisor.build(Engine.from_knowledge(load_knowledge(Path({str(REPO)!r}))))\n"
            "decide(advisor, PatientCase(hook='order-sign', patient_ref='Patient/example', genomics=[],\n"
            "                            medications=[]))\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cds.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    modules = json.loads(out.stdout.splitlines()[-1])
    assert "cds.knowledge.crosslink" in modules and "cds.knowledge.reachability" in modules   # the checks ran
    assert "cds.knowledge.importer" not in modules and "cds.knowledge.dpwg_importer" not in modules


def test_nothing_below_the_faces_reads_the_environment() -> None:
    """Configuration is read once, by a face, into the settings models (cds/settings.py) and handed down:
    the core (knowledge, store, pipeline, FHIR readers, cards, policy) never reads os.environ itself."""
    face_parts = {"service", "workbench", "smartapp", "screen"}
    readers = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in face_parts or (rel.name in ("cli.py", "__main__.py") and len(rel.parts) == 1):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                    and node.attr in ("environ", "getenv", "putenv"):
                readers.append(f"{rel}:{node.lineno}")
    assert readers == []
