"""The workbench's try-a-patient takes a PharmCAT file as an upload (its own example, ../shared/pharmcat):
PharmCAT's calls as it made them, and the cards the service would show for them."""
from __future__ import annotations

import html
import io
import re

from pgx_paths import SHARED
from workbench_live import form_token

PHENOTYPE = SHARED / "pharmcat" / "pharmcat.example.phenotype.json"


def upload(client, content: bytes, name: str, drugs: str = "codeine, abacavir", hook: str = "order-sign"):
    # as a browser sends the form: with the CSRF token of the page that holds it
    return client.post("/workbench/try/pharmcat", content_type="multipart/form-data",
                       data={"pharmcat": (io.BytesIO(content), name), "drugs": drugs, "hook": hook,
                             "csrf_token": form_token(client, "/workbench/try/pharmcat")})


def test_a_phenotype_json_upload_shows_pharmcats_calls_and_the_cards(client):
    response = upload(client, PHENOTYPE.read_bytes(), "sample.phenotype.json")
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 200, page[:500]
    calls = page[page.index('id="pharmcat-calls"'):page.index("</table>", page.index('id="pharmcat-calls"'))]
    assert re.search(r'data-gene="CYP2D6"><td>CYP2D6</td><td>OUTSIDE</td><td>called</td><td>\*1/\*3</td>'
                     r'<td>Intermediate Metabolizer</td><td>1.0</td>', calls)
    assert 'data-gene="HLA-A"><td>HLA-A</td><td>NONE</td><td>no result</td>' in calls
    summaries = re.findall(r'class="card-summary">([^<]*)<', page)
    assert any(s.startswith("Abacavir") for s in summaries)           # HLA-B *57:01 positive
    assert any(s.startswith("Codeine") for s in summaries)            # CYP2D6 activity score 1.0


def test_an_upload_that_is_not_pharmcat_output_is_a_message(client):
    response = upload(client, b'{"resourceType": "Bundle"}', "bundle.json")
    assert response.status_code == 400
    assert "bundle.json: not a PharmCAT phenotype.json" in html.unescape(response.get_data(as_text=True))
    assert upload(client, b"", "").status_code == 400
