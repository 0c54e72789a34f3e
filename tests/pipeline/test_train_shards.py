"""`metaclip-curate shards` on a pool of URLs (the demo's): matched rows for img2dataset."""

import json

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner
from pools import run_cli

from metaclip.cli import main


def test_url_pool_gives_matched_rows_and_probabilities(tmp_path):
    # the demo curates from Python with int settings (t_en = 20): reopening must agree
    run_cli("demo", "-o", str(tmp_path / "demo"), "--texts-per-lang", "200", "-q")
    out, dest = tmp_path / "demo" / "curated", tmp_path / "m"
    refused = CliRunner().invoke(main, ["shards", str(out), "-o", str(dest)])
    assert refused.exit_code == 2 and "img2dataset" in refused.output
    assert "Traceback" not in refused.output
    run_cli("shards", str(out), "-o", str(dest), "--online", "-q")  # the folder is still free
    card = json.loads((out / "datacard.json").read_text())
    rows = pq.read_table(sorted(dest.glob("matched-*.parquet"))).to_pylist()
    assert len(rows) == card["pool"]["matched"]
    assert all(r["entry_ids"] for r in rows) and {"url", "text", "key"} <= set(rows[0])
    probs = np.load(dest / "probs.npy")
    side = json.loads((dest / "probs.json").read_text())
    assert side["language_offsets"] == card["metadata"]["language_offsets"]
    assert len(probs) == sum(card["metadata"]["entries_per_language"].values())
    subset = {r["key"] for r in pq.read_table(out / "subset").to_pylist()}
    assert subset <= {r["key"] for r in rows}  # the subset is drawn from the matched rows
