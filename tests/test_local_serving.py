"""local_serving without starting a server: the refusal when another TorchServe already runs."""
import pytest

from local_serving import server
from local_serving.server import LocalEndpoint, ServerError


def test_a_second_server_is_refused_with_the_pid_of_the_first(monkeypatch, tmp_path):
    monkeypatch.setattr(server, "running_torchserve_pids", lambda: [4242])
    endpoint = LocalEndpoint(tmp_path / "model.tar.gz", [1, 3, 8, 8], tmp_path / "work", {})
    with pytest.raises(ServerError, match=r"another TorchServe is running \(pid 4242\).*one per machine"):
        endpoint.start()
    assert endpoint.process is None and not (tmp_path / "work").exists()  # nothing started, nothing written
