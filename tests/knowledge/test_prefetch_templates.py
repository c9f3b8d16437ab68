"""The project's `{{pgx.*}}` prefetch tokens (cds/knowledge/prefetch.py): expanded from the FHIR
mappings at load, and an unknown one is a validation error with file and line. CDS Hooks 2.0,
"Prefetch tokens": an EHR knows only `{{context.*}}` and the `{{user…Id}}` tokens, so none of ours may
remain in a loaded service."""
from __future__ import annotations

import shutil
import subprocess
import sys

from pgx_paths import REPO


def test_loaded_services_carry_no_project_token_and_search_the_mapped_codes(kb):
    from cds.fhir.mappings import default_mappings
    from cds.knowledge.prefetch import genomic_search_codes

    codes = genomic_search_codes(default_mappings())
    assert len(codes) == len(set(codes)) and codes
    for service in kb.services:
        assert all("pgx." not in t for t in service.prefetch.values()), service.id
        assert service.prefetch["genomics"].endswith("&code=" + ",".join(codes))


def test_an_unknown_token_is_reported_with_file_and_line(tmp_path):
    root = tmp_path / "kb"
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, root / part)
    hooks = root / "hooks/pgx.yaml"
    text = hooks.read_text()
    hooks.write_text(text.replace("&code={{pgx.genomicCodes}}", "&code={{pgx.genomicCode}}", 1))
    line = next(n for n, l in enumerate(hooks.read_text().splitlines(), 1) if "&code={{pgx.genomicCode}}" in l)
    result = subprocess.run([sys.executable, "-m", "cds.cli", "validate", str(root)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert f"hooks/pgx.yaml:{line}:" in result.stdout + result.stderr
    assert "unknown prefetch token {{pgx.genomicCode}}" in result.stdout + result.stderr
