"""python -m paper builds its targets with sidecar metadata."""

import json

from paper.__main__ import main


def test_table7_target(tmp_path):
    assert main(["table7", "--fast", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "table7.md").read_text()
    assert "| DDPM | UB | 1.45e-01 | 2.24e-02 | 6.20e-03 | 2.10e-03 |" in text
    assert "| DDPM | LB | 9.85e-06 | 9.81e-06 | 9.72e-06 | 9.51e-06 |" in text
    meta = json.loads((tmp_path / "table7.md.json").read_text())
    assert {"commit", "config", "versions", "wall_time_s", "device"} <= set(meta)
