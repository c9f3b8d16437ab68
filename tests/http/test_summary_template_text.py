"""A pharmacist's summary template is text, not markup (issue 24 item 4): the card's summary carries
it as written (CDS Hooks summaries are plain text, so nothing is escaped into it), and the workbench,
which shows the card as HTML, shows the same characters, never a tag of the template's."""
from __future__ import annotations

import html
import re
import shutil

from fhirdata import genotype, hook_request, medication_request, searchset
from live_service import LiveServer
from pgx_paths import REPO

TEMPLATE = "{Drug}: {results} — <b>avoid</b> & *prasugrel or ticagrelor* <script>alert(1)</script>"
FILLED = "Clopidogrel: CYP2C19 Poor Metabolizer — <b>avoid</b> & *prasugrel or ticagrelor* <script>alert(1)</script>"
SHIPPED = "summary: '{Drug}: {results} — avoid; use prasugrel or ticagrelor if no contraindication'"


def _service_with_template(tmp_path) -> LiveServer:
    from cds.service.app import create_app
    from cds.service.config import Settings

    for name in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / name, tmp_path / name)
    rules = tmp_path / "rules" / "antiplatelets.yaml"
    shipped = rules.read_text()
    assert SHIPPED in shipped, "the clopidogrel poor-metabolizer template this test replaces has changed"
    rules.write_text(shipped.replace(SHIPPED, f"summary: '{TEMPLATE}'"))
    settings = Settings(auth_mode="off", audit=False, knowledge_dir=str(tmp_path),
                        local_state=str(tmp_path / "local-state.sqlite3"))
    return LiveServer(create_app(settings))


def test_a_summary_template_is_shown_as_written(tmp_path):
    live = _service_with_template(tmp_path)
    try:
        body = hook_request("order-sign", medication_request("clopidogrel"),
                            genomics=searchset(genotype("CYP2C19", "*2/*2")))
        response = live.call("pgx-order-sign", body)
        assert response.status_code == 200
        (card,) = response.json()["cards"]
        assert card["summary"] == FILLED

        page = live.app.test_client().get("/workbench/try", query_string={
            "genotypes": "CYP2C19=*2/*2", "drugs": "clopidogrel", "hook": "order-sign"}).get_data(as_text=True)
        (shown,) = re.findall(r'class="card-summary">([^<]*)<', page)
        assert html.unescape(shown) == FILLED
        assert "<b>avoid</b>" not in page and "<script>alert(1)" not in page
    finally:
        live.stop()
