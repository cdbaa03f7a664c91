"""One bad-sample policy for every stage that reads images (collect, cache, steer, report).

A sample the dataset cannot read, or whose image the model cannot take, is skipped or stops the
stage, as the run's `on_bad_sample` says ("skip" or "stop"). A skipped sample is never dropped
silently: one line on stderr, a `sample-skipped` event in events.jsonl, and a record the stage keeps
in its output (activations.h5 `/skipped`, the features.h5 `skipped` attribute, the state's count).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from lmmsae.datasets.base import BadSample
from lmmsae.errors import UserError

POLICIES = ("skip", "stop")


@dataclass
class Loaded:
    """The usable samples of one batch of dataset indices, the model's batch of them, and what was skipped."""

    indices: list[int]
    samples: list[Any]
    batch: Any = None                     # adapter.prepare(samples), or None (no adapter / nothing usable)
    skipped: list[dict[str, Any]] = field(default_factory=list)


class Policy:
    """Applies `on_bad_sample` for one stage: skip (reported and recorded) or stop (one-line error)."""

    def __init__(self, policy: str = "skip", stage: str = "collect", log: Callable[..., None] | None = None):
        if policy not in POLICIES:
            raise UserError(f"on_bad_sample = {policy!r}: use skip or stop")
        self.policy, self.stage, self.log = policy, stage, log
        self.skipped: list[dict[str, Any]] = []

    def bad(self, index: int, sample_id: str, reason: str) -> dict[str, Any]:
        if self.policy == "stop":
            raise UserError(f"{self.stage}: sample {sample_id!r} (index {index}): {reason}; pass "
                            f"--on-bad-sample skip to skip such samples")
        print(f"[{self.stage}] skipping sample {sample_id!r} (index {index}): {reason}", file=sys.stderr, flush=True)
        record = {"index": int(index), "id": str(sample_id), "reason": reason}
        if self.log is not None:
            self.log("sample-skipped", stage=self.stage, **record)
        self.skipped.append(record)
        return record


def load_samples(dataset, indices: Sequence[int], policy: Policy) -> Loaded:
    """The samples at `indices` that the dataset can read."""
    kept, samples, skipped = [], [], []
    for i in indices:
        try:
            samples.append(dataset.sample(int(i)))
            kept.append(int(i))
        except BadSample as exc:
            skipped.append(policy.bad(i, exc.sample_id, exc.reason))
    return Loaded(kept, samples, None, skipped)


def load_batches(dataset, adapter, indices: Sequence[int], batch_size: int, policy: Policy,
                 prompt: str | None = None) -> Iterator[Loaded]:
    """Batches of the usable samples among `indices`, each prepared by the adapter (a failure is
    traced to its sample, so one bad image costs one sample, not a batch)."""
    for start in range(0, len(indices), batch_size):
        loaded = load_samples(dataset, indices[start:start + batch_size], policy)
        batch, kept, samples, skipped = _prepare(adapter, loaded.samples, loaded.indices, prompt, policy)
        yield Loaded(kept, samples, batch, loaded.skipped + skipped)


def _prepare(adapter, samples, indices, prompt, policy: Policy):
    """(batch, indices, samples, skipped) for the samples the model can take."""
    if not samples:
        return None, [], [], []
    try:
        return adapter.prepare(samples, prompt), indices, samples, []
    except BadSample:
        first = None
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - find the culprit sample below
        first = exc
    good, kept, skipped, rejected = [], [], [], 0
    for i, s in zip(indices, samples):
        try:
            adapter.prepare([s], prompt)
        except BadSample as exc:
            skipped.append(policy.bad(i, s.id, exc.reason))
            continue
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor rejected it
            if first is not None and len(samples) > 1 and rejected + 1 == len(samples):
                raise first  # every sample fails the same way: a real error, not bad data
            rejected += 1
            skipped.append(policy.bad(i, s.id, f"rejected by the processor ({type(exc).__name__}: {exc})"))
            continue
        good.append(s)
        kept.append(i)
    if not good:
        return None, [], [], skipped
    return adapter.prepare(good, prompt), kept, good, skipped
