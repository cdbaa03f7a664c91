import json

from lmmsae import secrets
from lmmsae.jsonl import JsonlWriter
from lmmsae.rundir import RunDir


def test_registered_keys_and_key_like_variables_are_masked(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-from-env-12345")
    monkeypatch.setenv("HF_TOKEN", "hf_token_value_678")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")   # not a secret: its name does not end like one
    monkeypatch.setenv("OTHER_KEY", "short")                 # too short to mask without garbling text
    secrets.register("registered-secret-999")
    text = "a sk-from-env-12345 b hf_token_value_678 c registered-secret-999 d false short"
    assert secrets.scrub(text) == "a *** b *** c *** d false short"
    assert secrets.scrub("") == "" and secrets.scrub("nothing here") == "nothing here"


def test_events_and_records_are_scrubbed_on_the_way_to_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_API_KEY", "sk-disk-secret-4242")
    run = RunDir.create(tmp_path / "runs", "r")
    run.log("explain-failed", reason="401: Incorrect API key provided: sk-disk-secret-4242")
    with JsonlWriter(tmp_path / "records.jsonl") as writer:
        writer.write({"reason": "echoed sk-disk-secret-4242"})
    assert json.loads((tmp_path / "records.jsonl").read_text())["reason"] == "echoed ***"
    assert "sk-disk-secret-4242" not in run.file("events.jsonl").read_text()
    assert "Incorrect API key provided: ***" in run.file("events.jsonl").read_text()
