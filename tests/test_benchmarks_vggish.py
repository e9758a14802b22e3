"""models.vggish_benchmark prints one JSON line with the throughput."""

import json

from models import vggish_benchmark


def test_prints_throughput(capsys):
    assert vggish_benchmark.main(["--seconds", "2", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples_per_call"] == 2 and result["x_realtime"] > 0 and result["front_end_x_realtime"] > 0
