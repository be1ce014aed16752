"""One real local Ray cluster for every Ray test: a head node and one extra worker node, 1 CPU each, a
small object store (Ray's default would take a third of the machine's memory)."""
from __future__ import annotations

import pytest

import ray  # the test extra installs m3search[distributed]: a missing Ray is a failure, not a skip

OBJECT_STORE = 80 * 1024 * 1024


@pytest.fixture(scope="package")  # torn down before other packages run: some of them fork
def ray_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    yield cluster
    ray.shutdown()
    cluster.shutdown()
