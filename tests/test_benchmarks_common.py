"""benchmarks.common: one parser convention and one JSON envelope for every benchmark; the one CLI."""

import argparse
import json

import pytest

import benchmarks.__main__ as cli
from benchmarks import common


def test_envelope_names_the_benchmark_the_machine_and_the_flags_without_internal_ones(tmp_path):
    args = argparse.Namespace(steps=3, json=str(tmp_path / "o.json"), measure=None)
    written = common.write_json(args.json, "x", args, {"rows": [1]})
    assert json.loads((tmp_path / "o.json").read_text()) == written
    assert set(written) == {"benchmark", "date", "machine", "config", "results"}
    assert written["benchmark"] == "x" and written["config"] == {"steps": 3} and written["results"] == {"rows": [1]}
    assert written["machine"]["cpus"] >= 1 and written["date"].endswith("UTC")
    assert common.write_json(None, "x", args, 1)["results"] == 1  # no path: nothing written, envelope returned


def test_parser_takes_no_prefixes_and_has_json():
    p = common.parser("Title.\n\nMore.")
    p.add_argument("--steps_total", type=int, default=1)
    assert p.description == "Title." and p.parse_args(["--json", "f"]).json == "f"
    with pytest.raises(SystemExit):
        p.parse_args(["--steps", "2"])


def test_the_cli_runs_the_named_benchmark_with_its_flags(monkeypatch):
    seen = []
    from benchmarks import vggish

    monkeypatch.setattr(vggish, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["vggish", "--seconds", "2"]) == 0 and seen == [["--seconds", "2"]]
    assert set(cli.NAMES) == {"input", "beam", "training", "serving", "vggish", "all"}
    with pytest.raises(SystemExit):
        cli.main(["nope"])
