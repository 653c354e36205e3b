"""Where the Ray runtime keeps checkpoints: URIs pass through untouched, paths become absolute."""

from pathlib import Path

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
