import json

from lmmsae.jsonl import JsonlWriter, read_jsonl
from lmmsae.steering.records import done_keys


def test_append_resume_and_torn_tail(tmp_path):
    path = tmp_path / "s" / "x.jsonl"
    with JsonlWriter(path) as w:
        w.write({"key": "a", "kl": float("nan")})
        w.write({"key": "b", "v": [1.0, float("inf")]})
    with open(path, "a") as f:
        f.write('{"key": "c", "v"')  # a crash mid-line
    assert done_keys(path) == {"a", "b"}
    with JsonlWriter(path) as w:
        w.write({"key": "d"})
    rows = list(read_jsonl(path))
    assert [r["key"] for r in rows] == ["a", "b", "d"]
    assert rows[0]["kl"] is None and rows[1]["v"] == [1.0, None]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert done_keys(tmp_path / "missing.jsonl") == set()
