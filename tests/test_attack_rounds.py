"""``fl.attack_rounds``: the server attacks the chosen rounds only; training runs every round."""

from __future__ import annotations

import json

from fl_leak.config import compose
from fl_leak.fl import simulate
from fl_leak.fl.validation import problems

BASE = ["model=cnn2_c1", "fl.num_clients=2", "fl.lr=0.1", "audit.enabled=false"]


def test_only_the_chosen_rounds_are_attacked(tmp_path):
    summary = simulate(compose([*BASE, "fl.rounds=3", "fl.attack_rounds=[2]"]), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(record["round"], record["client"]) for record in records] == [(2, 0), (2, 1)]
    assert all(record["psnr"] >= 60 for record in records)
    assert [entry["round"] for entry in summary["rounds"]] == [0, 1, 2, 3]
    assert all("test_accuracy" in entry for entry in summary["rounds"])


def test_attack_rounds_outside_the_run_are_refused():
    found = problems(compose([*BASE, "fl.rounds=2", "fl.attack_rounds=[1,3]"]))
    assert found == ["fl.attack_rounds=[1, 3] must name rounds 1..2"]
