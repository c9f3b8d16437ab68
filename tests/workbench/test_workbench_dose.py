"""Try a patient with the clinical inputs of a dose: warfarin's IWPC estimate from typed results, age,
height, weight and medications, through the same core as the service's dose card."""
from __future__ import annotations

from urllib.parse import urlencode


def _try(client, **fields):
    query = {"genotypes": "CYP2C9=*2/*3\nVKORC1=rs9923231 T/T", "drugs": "warfarin", "hook": "order-sign", **fields}
    response = client.get("/workbench/try?" + urlencode(query))
    return response.status_code, response.get_data(as_text=True)


def test_typed_inputs_give_the_iwpc_estimate(client):
    status, page = _try(client, age="45", height="182", weight="95", medications="none")
    assert status == 200
    assert "IWPC estimate 13.2 mg/week (1.9 mg/day)" in page
    assert 'name="weight"' in page and 'value="95"' in page


def test_a_missing_weight_is_named_and_no_number_given(client):
    status, page = _try(client, age="45", height="182", medications="none")
    assert status == 200
    assert "no genotype-guided dose" in page and "--weight not given" in page
    assert "Warfarin: IWPC estimate" not in page


def test_a_bad_number_is_a_sentence(client):
    status, page = _try(client, age="forty")
    assert status == 400 and "age must be a number" in page
