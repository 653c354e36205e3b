"""Where the Ray runtime keeps checkpoints (URIs pass through untouched, paths become absolute), what a
cluster of several nodes requires of storage and tracking, and built-in shards on a node that lacks them."""

from pathlib import Path

import pytest

from allnc_dist.engine.ray_driver import storage_location


def test_a_storage_uri_is_passed_to_ray_as_written(tmp_path):
    # Path("s3://bucket/x").resolve() would have turned it into a local folder "<cwd>/s3:/bucket/x".
    assert storage_location("s3://bucket/ray_results", tmp_path) == "s3://bucket/ray_results"
    assert storage_location("gs://bucket/a/b", tmp_path) == "gs://bucket/a/b"


def test_a_storage_path_is_made_absolute_and_the_default_is_under_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_location("shared/ray", tmp_path / "run") == str(tmp_path / "shared" / "ray")
    assert storage_location(None, tmp_path / "run") == str(tmp_path / "run" / "ray")
    assert Path(storage_location("/mnt/nfs/ray", tmp_path)).is_absolute()


def multi_node_config(*overrides):
    from allnc_dist.config import load_config

    return load_config(None, ["tracking.mlflow_uri=http://10.0.0.1:5000", "distributed.storage_path=/mnt/nfs/ray",
                              *overrides])


def test_one_node_needs_no_declared_storage():
    from allnc_dist.engine.ray_driver import check_multi_node_storage

    check_multi_node_storage(multi_node_config("distributed.storage_path=null",
                                               "tracking.mlflow_uri=sqlite:///mlflow.db"), ["127.0.0.1"])


@pytest.mark.parametrize("overrides,nodes,message", [
    (["distributed.storage_path=null"], ["10.0.0.1", "10.0.0.2"],
     r"has 2 nodes, and Ray Train's checkpoints would go to the run folder on this node: set distributed.storage_path"),
    (["tracking.mlflow_uri=sqlite:////runs/mlflow.db"], ["10.0.0.1", "10.0.0.2"],
     r"tracking.mlflow_uri=sqlite:////runs/mlflow.db is a store on this node"),
    (["tracking.mlflow_uri=http://127.0.0.1:5000"], ["10.0.0.1", "10.0.0.2"],
     r"http://127.0.0.1:5000 is a loopback address the other nodes do not reach"),
])
def test_several_nodes_need_shared_storage_and_a_tracking_server(overrides, nodes, message):
    from allnc_dist.config import ConfigError
    from allnc_dist.engine.ray_driver import check_multi_node_storage

    with pytest.raises(ConfigError, match=message):
        check_multi_node_storage(multi_node_config(*overrides), nodes)


def test_several_nodes_accept_declared_storage_and_a_server_they_reach():
    from allnc_dist.engine.ray_driver import check_multi_node_storage

    check_multi_node_storage(multi_node_config(), ["10.0.0.1", "10.0.0.2"])
    # Every node on loopback (the simulated cluster of tests/test_cluster.py): a loopback server is reachable.
    check_multi_node_storage(multi_node_config("tracking.mlflow_uri=http://127.0.0.2:5000"), ["127.0.0.2", "127.0.0.3"])
    check_multi_node_storage(multi_node_config("tracking.enabled=false", "tracking.mlflow_uri=sqlite:///x.db"),
                             ["10.0.0.1", "10.0.0.2"])


def test_a_node_without_the_builtin_shards_writes_them_and_refuses_a_different_set(tmp_path, monkeypatch):
    from allnc_dist.config import load_config
    from allnc_dist.data.builtin_shards import index_sha256, resolve_shards, shards_on_this_node
    from allnc_dist.errors import DataError

    (cfg,) = resolve_shards({"run": load_config(None, ["data.name=digits_lt"])}, tmp_path / "driver").values()
    assert cfg.data.builtin_sha256 == index_sha256(tmp_path / "driver" / "shards")
    assert shards_on_this_node(cfg.data) == cfg.data  # the driver's node sees its folder
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "node_tmp"))
    elsewhere = cfg.data.model_copy(update={"shards": str(tmp_path / "not_on_this_node")})
    local = shards_on_this_node(elsewhere)
    assert Path(local.shards).parent == tmp_path / "node_tmp" / "allnc-shards"
    assert index_sha256(Path(local.shards)) == cfg.data.builtin_sha256
    with pytest.raises(DataError, match=r"differ from the driver's .*put the data on storage every node mounts"):
        shards_on_this_node(elsewhere.model_copy(update={"builtin_sha256": "0" * 64}))
