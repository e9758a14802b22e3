"""benchmarks.vggish prints one JSON line with the throughput, in the benchmarks' envelope."""

import json

from benchmarks import vggish


def test_prints_throughput(capsys):
    assert vggish.main(["--seconds", "2", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["benchmark"] == "vggish" and out["config"]["seconds"] == 2 and out["machine"]["tensorflow"]
    result = out["results"]
    assert result["examples_per_call"] == 2 and result["x_realtime"] > 0 and result["front_end_x_realtime"] > 0
