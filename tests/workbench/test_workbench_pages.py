"""Every workbench page through Flask's test client against the bundled knowledge: what it shows,
and its error states (unknown guideline or rule, bad genotype, unknown drug or population, pasted
text that is not JSON or not a request we could answer)."""
from __future__ import annotations

import html
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workbench_live import build_app, copy_knowledge, post_form

EXAMPLE = "cds/workbench/examples/order-select-clopidogrel-cyp2c19.json"


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def summaries(response) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'class="card-summary">([^<]*)<', response.get_data(as_text=True))]


def indicators(response) -> list[str]:
    return re.findall(r'<article class="cds-card[^"]*" data-indicator="(\w+)"', response.get_data(as_text=True))


def error_of(response) -> str:
    found = re.search(r'id="try-error">([^<]*)<', response.get_data(as_text=True))
    return html.unescape(found.group(1)) if found else ""


def example_request() -> dict:
    from pgx_paths import REPO

    return json.loads((REPO / EXAMPLE).read_text(encoding="utf-8"))


# --- matrix, guidelines, rules -------------------------------------------------------------------

def test_matrix_has_every_drug_gene_guideline_and_rule(client, kb):
    response = client.get("/workbench/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for drug, guidelines in kb.drugs().items():
        assert f'data-drug="{drug}"' in page
        for g in guidelines:
            assert f'href="/workbench/guidelines/{g.id}"' in page
    row = page[page.index('data-drug="clopidogrel"'):]
    row = row[:row.index("</tr>")]
    assert 'data-gene="CYP2C19"' in row and ">S9<" in row and ">M6<" in row   # CPIC 1.54: 9 Strong, 6 Moderate
    assert 'href="/workbench/rules/clopidogrel-cyp2c19"' in row
    ondansetron = page[page.index('data-drug="ondansetron"'):]
    ondansetron = ondansetron[:ondansetron.index("</tr>")]
    assert "order-sign" in ondansetron and "order-select" not in ondansetron   # local policy: signing only
    tropisetron = page[page.index('data-drug="tropisetron"'):]
    assert "switched off by" in tropisetron[:tropisetron.index("</tr>")]
    warfarin = page[page.index('data-drug="warfarin"'):]
    assert "no lookup recommendations" in warfarin[:warfarin.index("</tr>")]


def test_no_network_assets(client):
    for url in ("/workbench/", "/workbench/try", "/workbench/rules/default", "/workbench/statistics"):
        page = client.get(url).get_data(as_text=True)
        for attribute in re.findall(r'(?:src|href)="([^"]+)"', page):
            if attribute.startswith(("http://", "https://")):
                # outbound links to sources are fine; nothing the page loads may come from the network
                assert not re.search(rf'<(script|link|img)[^>]+(src|href)="{re.escape(attribute)}"', page), attribute


def test_guideline_page(client, kb):
    guideline = kb.guidelines["cpic-clopidogrel-cyp2c19"]
    response = client.get("/workbench/guidelines/cpic-clopidogrel-cyp2c19")
    assert response.status_code == 200
    page = text(response)
    assert guideline.version in page and guideline.url in page
    assert "guidelines/cpic/cpic-clopidogrel-cyp2c19.yaml:" in page
    for citation in guideline.citations:
        assert f"PMID {citation.pmid}" in page
    for rec in guideline.recommendations:
        assert f'id="{rec.id}"' in page
    assert "clopidogrel-cyp2c19" in page and "4 test cases" in page
    assert "RxNorm 32968" in page


def test_guideline_list(client, kb):
    page = text(client.get("/workbench/guidelines"))
    assert all(f"/workbench/guidelines/{gid}" in page for gid in kb.guidelines)


def test_unknown_guideline_is_a_404_page(client):
    response = client.get("/workbench/guidelines/cpic-nonsense")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "No such guideline" in text(response) and "cpic-nonsense" in text(response)


def test_rule_page_runs_its_test_cases(client):
    response = client.get("/workbench/rules/clopidogrel-cyp2c19")
    assert response.status_code == 200
    page = text(response)
    assert "rules/antiplatelets.yaml:8" in page
    assert "4 of 4 pass" in page and page.count(">PASS<") == 4 and ">FAIL<" not in page
    assert "prasugrel — RxNorm 613391" in page
    assert "- id: clopidogrel-cyp2c19" in page           # its YAML source, with the comments above it
    assert "# - Formulary alternatives are the two drugs CPIC names" in page
    assert "/workbench/try?genotypes=CYP2C19%3D%2A2%2F%2A2&amp;drugs=clopidogrel" in response.get_data(as_text=True)
    assert indicators(response).count("critical") == 1   # the poor-metabolizer case renders its card


def test_switched_off_rule_page(client):
    page = text(client.get("/workbench/rules/tropisetron-off"))
    assert "switched off" in page and "no drug on any hook" in page and "1 of 1 pass" in page


def test_rule_list_and_unknown_rule(client, kb):
    page = text(client.get("/workbench/rules"))
    assert all(f"/workbench/rules/{r.id}" in page for r in kb.rules)
    response = client.get("/workbench/rules/no-such-rule")
    assert response.status_code == 404 and "No such rule" in text(response)


def test_a_failing_case_stops_the_policy_with_the_difference(tmp_path):
    root = copy_knowledge(tmp_path)
    rules = root / "rules" / "antiplatelets.yaml"
    source = rules.read_text(encoding="utf-8")
    # the pharmacist expects a warning where the rule gives a critical card
    broken = source.replace("          - indicator: critical\n            summary_contains: [Clopidogrel, CYP2C19 Poor",
                            "          - indicator: warning\n            summary_contains: [Clopidogrel, CYP2C19 Poor")
    assert broken != source
    rules.write_text(broken, encoding="utf-8")
    # A failing test case stops that policy going live (issue 22): the service does not start on it, and
    # says which case fails, where, and how; the workbench shows such a failure on a proposal instead.
    from cds.errors import KnowledgeError

    with pytest.raises(KnowledgeError) as refused:
        build_app(knowledge_dir=root)
    line = broken.splitlines().index("      - name: poor metabolizer gets a critical card with both alternatives") + 1
    assert f"rules/antiplatelets.yaml:{line}:" in str(refused.value)
    assert "expected card 1 not found: indicator is critical, expected warning" in str(refused.value)


# --- try a patient ------------------------------------------------------------------------------

def test_try_form_is_empty_at_first(client):
    response = client.get("/workbench/try")
    assert response.status_code == 200 and not indicators(response) and 'id="result"' not in text(response)


def test_try_clopidogrel_poor_metabolizer(client):
    response = client.get("/workbench/try", query_string={"genotypes": "CYP2C19=*2/*2", "drugs": "clopidogrel",
                                                          "hook": "order-sign"})
    assert response.status_code == 200
    assert indicators(response) == ["critical"]
    (summary,) = summaries(response)
    assert summary.startswith("Clopidogrel: CYP2C19 Poor Metabolizer")
    page = text(response)
    assert "Order prasugrel instead of clopidogrel" in page and "Order ticagrelor instead of clopidogrel" in page
    assert "<strong>Poor Metabolizer</strong>" in response.get_data(as_text=True)   # Markdown rendered
    assert "cpic-7589083" in page and 'href="/workbench/rules/clopidogrel-cyp2c19"' in page
    assert "CYP2C19 = Poor Metabolizer" in page                                    # the fact asserted


def test_try_matches_cds_test_for_every_shipped_case(client, kb):
    """The form shows what `cds test` checks: the same cards for every test case in rules/."""
    for rule in kb.rules:
        for case in rule.tests:
            query = {"genotypes": "\n".join(f"{g}={v}" for g, v in case.genotypes.items()),
                     "drugs": ", ".join(case.drugs), "hook": case.hook, "population": case.population or ""}
            response = client.get("/workbench/try", query_string=query)
            assert response.status_code == 200, (rule.id, case.name, error_of(response))
            got = indicators(response)
            assert len(got) == len(case.expect), (rule.id, case.name)
            for expected in case.expect:
                if expected.indicator:
                    assert expected.indicator in got, (rule.id, case.name)


def test_try_population_and_hook(client):
    nvi = client.get("/workbench/try", query_string={"genotypes": "CYP2C19=*2/*2", "drugs": "clopidogrel",
                                                     "population": "NVI"})
    # the rule's adjustment makes every poor-metabolizer card critical; the text is the NVI recommendation
    assert indicators(nvi) == ["critical"] and "Neurovascular indications (NVI)" in text(nvi)
    assert "Consider an alternative P2Y12 inhibitor" in text(nvi)
    select = client.get("/workbench/try", query_string={"genotypes": "CYP2D6=*2/*2x2", "drugs": "ondansetron",
                                                        "hook": "order-select"})
    assert select.status_code == 200 and indicators(select) == [] and "No card" in text(select)


def test_try_patient_view_summary(client):
    response = client.get("/workbench/try", query_string={"genotypes": "CYP2C19=*2/*2", "drugs": "clopidogrel",
                                                          "hook": "patient-view"})
    assert response.status_code == 200 and len(indicators(response)) == 1
    assert "clopidogrel" in summaries(response)[0]


def test_try_no_result_on_file_gives_the_pretest_card(client):
    response = client.get("/workbench/try", query_string={"genotypes": "", "drugs": "abacavir"})
    assert indicators(response) == ["warning"] and "no HLA-B*57:01 result on file" in summaries(response)[0]
    assert "pre-test alert" in text(response)


@pytest.mark.parametrize("query, message", [
    ({"genotypes": "CYP2C19=banana", "drugs": "clopidogrel"}, "'banana' is not a phenotype"),
    ({"genotypes": "CYP2C19 *2/*2", "drugs": "clopidogrel"}, "expected GENE=VALUE"),
    ({"genotypes": "CYP9Z9=*1/*1", "drugs": "clopidogrel"}, "unknown gene 'CYP9Z9'"),
    ({"genotypes": "CYP2C19=*2/*2", "drugs": "aspirinx"}, "unknown drug 'aspirinx'"),
    ({"genotypes": "CYP2C19=*2/*2", "drugs": ""}, "enter at least one drug"),
    ({"genotypes": "CYP2C19=*2/*2", "drugs": "clopidogrel", "population": "CBZ naive"},
     "population 'CBZ naive' is not one the guidelines of clopidogrel use (they use: CVI ACS PCI, CVI non-ACS non-PCI, NVI)"),
    ({"genotypes": "CYP2C19=*2/*2", "drugs": "clopidogrel", "hook": "order-dispatch"}, "hook must be one of"),
])
def test_try_bad_input_is_a_message_on_the_form(client, query, message):
    response = client.get("/workbench/try", query_string=query)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert message in error_of(response)
    assert not indicators(response)
    assert query.get("genotypes", "") in text(response)       # the form keeps what was typed


def test_try_escapes_what_was_typed(client):
    response = client.get("/workbench/try", query_string={"genotypes": "<script>alert(1)</script>=x",
                                                          "drugs": "<img src=x onerror=alert(1)>"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- paste a CDS Hooks request ----------------------------------------------------------------------

def test_pasted_example_request(client):
    response = post_form(client, "/workbench/try/request", {"request": json.dumps(example_request())}, page="/workbench/try/request")
    assert response.status_code == 200
    assert indicators(response) == ["critical"]
    assert summaries(response)[0].startswith("Clopidogrel: CYP2C19 Poor Metabolizer")
    page = text(response)
    assert "service pgx-order-select" in page
    assert "MedicationRequest/request-123" in page and "clopidogrel 75 MG Oral Tablet" in page   # the order read
    assert "Observation/Pgx-geno-1001" in page                                                  # the result's source
    assert "Optional prefetch key(s) patient, reports, reports-by-code, consent are not in the request" in page


def test_pasted_request_gives_what_the_service_gives(client):
    """The same request to the CDS service and to the workbench: the same cards (uuids aside)."""
    body = example_request()
    body["hook"] = "order-sign"
    del body["context"]["selections"]
    served = client.post("/cds-services/pgx-order-sign", json=body).get_json()["cards"]
    shown = post_form(client, "/workbench/try/request", {"request": json.dumps(body)}, page="/workbench/try/request")
    assert summaries(shown) == [c["summary"] for c in served]
    assert indicators(shown) == [c["indicator"] for c in served]
    assert [s["label"] for s in served[0]["suggestions"]] == ["Replace clopidogrel with prasugrel",
                                                             "Replace clopidogrel with ticagrelor"]
    page = shown.get_data(as_text=True)
    assert all(html.escape(s["label"]) in page for s in served[0]["suggestions"])
    assert "MedicationRequest/request-123" in text(shown)   # the suggestion deletes the draft order it replaces


class RecordingFhirServer:
    """A FHIR server on loopback that counts the requests it gets (the workbench must send none)."""

    def __init__(self):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests += 1
                self.send_response(500)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def test_pasted_request_without_genomics_never_fetches(client):
    fhir = RecordingFhirServer()
    try:
        body = example_request()
        del body["prefetch"]["genomics"]
        body["fhirServer"] = fhir.url
        body["fhirAuthorization"] = {"access_token": "secret-token-123", "token_type": "Bearer",
                                     "expires_in": 300, "scope": "patient/*.read", "subject": "cds"}
        response = post_form(client, "/workbench/try/request", {"request": json.dumps(body)}, page="/workbench/try/request")
    finally:
        fhir.stop()
    assert response.status_code == 200 and fhir.requests == 0
    page = text(response)
    assert "the workbench never contacts a FHIR server" in page and "genomics" in page
    assert page.count("secret-token-123") == 1     # only in the pasted text, echoed back in its own box
    assert "No pharmacogenomic result" in page


@pytest.mark.parametrize("pasted, message", [
    ("", "paste a CDS Hooks request"),
    ('{"hook": "order-sign",', "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 23"),
    ("[1, 2]", "a CDS Hooks request is a JSON object"),
    ('{"hook": "encounter-start"}', "no CDS service of this instance answers the hook 'encounter-start'"),
    ('{"hook": "order-sign", "context": {}}', "the service would answer HTTP 400: 'hookInstance' is required"),
])
def test_pasted_bad_input_is_a_message(client, pasted, message):
    response = post_form(client, "/workbench/try/request", {"request": pasted}, page="/workbench/try/request")
    assert response.status_code == 400 and message in error_of(response)


def test_pasted_request_missing_prefetch_without_fhir_server_is_the_services_412(client):
    body = example_request()
    del body["prefetch"]
    response = post_form(client, "/workbench/try/request", {"request": json.dumps(body)}, page="/workbench/try/request")
    assert response.status_code == 400
    assert error_of(response) == ("the service would answer HTTP 412: prefetch key(s) genomics missing and no "
                                  "fhirServer to fetch them from")
    served = client.post("/cds-services/pgx-order-select", json=body)
    assert served.status_code == 412


def test_paste_form_offers_the_example(client):
    page = text(client.get("/workbench/try/request"))
    assert 'id="load-example"' in page and '"hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"' in page


# --- validation -------------------------------------------------------------------------------------

def test_validation_of_good_knowledge(client, kb):
    response = client.get("/workbench/validation")
    assert response.status_code == 200
    page = text(response)
    assert "No problems" in page and kb.version in page and "It is the knowledge the service is running" in page


def test_validation_lists_errors_with_file_and_line(tmp_path):
    root = copy_knowledge(tmp_path)
    client = build_app(knowledge_dir=root).test_client()
    hooks = root / "hooks" / "pgx.yaml"
    lines = hooks.read_text(encoding="utf-8").splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.strip() == "hook: order-sign")
    lines[line - 1] = lines[line - 1].replace("order-sign", "order-sing")
    hooks.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "rules" / "zz-bad.yaml").write_text("rules:\n  - id: x\n    titel: typo\n", encoding="utf-8")

    response = client.get("/workbench/validation")
    assert response.status_code == 200
    page = text(response)
    name = hooks.relative_to(root).as_posix()
    assert f"{name}:{line}" in page and "order-sing" in page
    assert "rules/zz-bad.yaml:3" in page and "unknown field 'titel'" in page
    assert "rules/zz-bad.yaml:2" in page and "required field 'title' is missing" in page
    assert "required field 'drugs' is missing" in page
    assert page.count("<tr><td class=\"where\">") == 4       # nothing else: untouched files are not reported
    # the service still runs the knowledge it loaded
    assert client.get("/workbench/try", query_string={"genotypes": "CYP2C19=*2/*2",
                                                      "drugs": "clopidogrel"}).status_code == 200


def test_validation_of_a_folder_that_is_gone(tmp_path):
    import shutil

    root = copy_knowledge(tmp_path / "k")
    client = build_app(knowledge_dir=root).test_client()
    shutil.rmtree(root / "guidelines")
    response = client.get("/workbench/validation")
    assert response.status_code == 200 and "no guidelines/ folder here" in text(response)


def test_rules_list_says_scheduled_for_a_rule_not_yet_in_force(tmp_path):
    from datetime import date, timedelta

    root = copy_knowledge(tmp_path / "knowledge")
    start = date.today() + timedelta(days=3)
    path = root / "rules/local-overrides.yaml"
    path.write_text(path.read_text().replace("    hooks: [order-sign]\n    indicator: info\n",
                                             f"    hooks: [order-sign]\n    indicator: info\n    effective_from: {start}\n", 1))
    client = build_app(knowledge_dir=root).test_client()
    page = text(client.get("/workbench/rules"))
    row = page[page.index('href="/workbench/rules/ondansetron-cyp2d6"'):]
    row = row[:row.index("</tr>")]
    assert "scheduled" in row and f"in force from {start}" in row
    detail = text(client.get("/workbench/rules/ondansetron-cyp2d6"))
    assert "scheduled" in detail and f"not in force until {start}" in detail


def test_rule_page_states_the_suggest_alternatives_default(client):
    page = text(client.get("/workbench/rules/clopidogrel-cyp2c19"))
    assert "suggest_alternatives</code> default" in page and "alternative drug available" in page
    assert "none: the rule lists no alternatives" in text(client.get("/workbench/rules/default"))
