"""bench/ablations.py in its smoke mode: the ablations and two of the choice runs train for real
(local engine, 1 epoch); then the publisher's docs/RESULTS.md from them carries their numbers, the
comparisons computed from them and the heatmaps."""

import json
import re
import shutil

import pytest

from tests.bench_run import ROOT, publish, run_bench


@pytest.mark.timeout(600)
def test_ablations_smoke_and_the_results_page_from_real_runs(tmp_path):
    ufm = ROOT / "bench" / "results" / "ufm_imbalance.json"
    if ufm.exists():
        shutil.copyfile(ufm, tmp_path / "ufm_imbalance.json")
    run_bench("ablations", "--smoke", "--out", tmp_path, timeout=480)
    publish(tmp_path, tmp_path, "RESULTS.md")
    doc = (tmp_path / "RESULTS.md").read_text()
    for config in ("digits_lt", "synthetic100_small"):
        aggregates = json.loads((tmp_path / f"ablation_{config}.json").read_text())["aggregates"]
        allnc, ce = aggregates["allnc_paper"]["acc_top1"]["mean"], aggregates["ce"]["acc_top1"]["mean"]
        # The table row and the computed comparison both carry the runs' own numbers.
        assert re.search(rf"\| AllNC-paper +\| {allnc:.1f} ", doc)
        assert f"AllNC-paper {allnc:.1f} %, CE {ce:.1f} %" in doc
        for kind in ("classifier", "class_means"):
            png = tmp_path / "figures" / config / f"heatmap_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"figures/{config}/heatmap_{kind}.png" in doc
    # The choices study: AllNC's paper form under each tried choice, its row and its change against it.
    choices = json.loads((tmp_path / "choices_digits_lt.json").read_text())["choices"]
    default = json.loads((tmp_path / "ablation_digits_lt.json").read_text())["aggregates"]["allnc_paper"]
    assert len(choices) == 2
    for name, choice in choices.items():
        change = choice["aggregates"]["acc_top1"]["mean"] - default["acc_top1"]["mean"]
        assert re.search(rf"\| {re.escape(name)} +\| {choice['aggregates']['acc_top1']['mean']:.1f} ", doc)
        assert f"`{name}` ({' '.join(choice['overrides'])}): {choice['what']}. {change:+.1f} points overall" in doc
    assert ("| IR | variant |" in doc) == ufm.exists()
