"""LatencyTally puts each observation in the first bucket whose bound holds it, as prometheus_client does."""
from __future__ import annotations

import random

from prometheus_client import Histogram

from fastseldon.metrics import REQUEST_BUCKETS, LatencyTally, add_observations


def test_tally_matches_prometheus_histogram() -> None:
    rng = random.Random(7)
    values = [*REQUEST_BUCKETS[:-1], 0.0, 1e-9, 99.0, *(rng.uniform(0, 12) for _ in range(500)),
              *(rng.uniform(0, 0.003) for _ in range(500))]
    tally = LatencyTally()
    direct = Histogram("direct", "d", buckets=REQUEST_BUCKETS, registry=None)
    bulk = Histogram("bulk", "b", buckets=REQUEST_BUCKETS, registry=None)
    for v in values:
        tally.add(("k",), v)
        direct.observe(v)
    ((key, (count, total, counts)),) = tally.drain().items()
    add_observations(bulk, total, counts)
    assert key == ("k",) and count == len(values)

    def samples(h: Histogram) -> list[tuple[str, float]]:
        return [(s.labels.get("le", ""), s.value) for m in h.collect() for s in m.samples if s.name.endswith("bucket")]

    assert samples(bulk) == samples(direct)
    assert tally.drain() == {}


def test_add_all_counts_as_add_does_one_by_one() -> None:
    rng = random.Random(11)
    values = [rng.uniform(0, 0.02) for _ in range(300)] + [0.0, 50.0, *REQUEST_BUCKETS[:-1]]
    one, bulk = LatencyTally(), LatencyTally()
    for v in values:
        one.add(("n", "predict", "OK"), v)
    bulk.add_all(("n", "predict", "OK"), values[:100])
    bulk.add_all(("n", "predict", "OK"), values[100:])
    (a,), (b,) = one.drain().values(), bulk.drain().values()
    assert a[0] == b[0] == len(values) and a[2] == b[2] and abs(a[1] - b[1]) < 1e-9
