"""The admission rule: Host on loopback, declared size, token on POST; the same rule in the app and the edge."""
from __future__ import annotations

import pytest

from modelarts_mnist.errors import HostNotAllowed, MalformedHttp, PayloadTooLarge, Unauthorized
from modelarts_mnist.server.admission import Admission, is_loopback_address, is_loopback_name
from modelarts_mnist.server.app import ServeConfig, create_app


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8080", "localhost.", "app.localhost", "127.0.0.1",
                                  "127.1.2.3:80", "[::1]", "[::1]:8080", " localhost "])
def test_loopback_names(host):
    assert is_loopback_name(host)


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1",
                                  "[::1]x", "[::1", "localhost:80:80", "localhost:http", "0.0.0.0", "", "[::2]"])
def test_other_names_are_not_loopback(host):
    assert not is_loopback_name(host)


def test_bind_addresses():
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1") and is_loopback_address("localhost")
    assert not is_loopback_address("0.0.0.0") and not is_loopback_address("::")


def environ(method="POST", **fields):
    return {"REQUEST_METHOD": method, **fields}


def test_admission_checks_host_then_size_then_token():
    admit = Admission(100, "t", loopback_only=True)
    with pytest.raises(HostNotAllowed):
        admit(environ(HTTP_HOST="evil.example", CONTENT_LENGTH="1000"))
    with pytest.raises(PayloadTooLarge):
        admit(environ(HTTP_HOST="localhost", CONTENT_LENGTH="1000"))
    with pytest.raises(Unauthorized):
        admit(environ(HTTP_HOST="localhost", CONTENT_LENGTH="10", HTTP_X_AUTH_TOKEN="u"))
    with pytest.raises(MalformedHttp):
        admit(environ(CONTENT_LENGTH="1e3", HTTP_X_AUTH_TOKEN="t"))
    assert admit(environ(HTTP_HOST="localhost", CONTENT_LENGTH="10", HTTP_X_AUTH_TOKEN="t")) == 100
    assert admit(environ("GET")) == 100  # the token guards POST only


def test_any_host_is_answered_when_not_bound_to_loopback():
    assert Admission(100)(environ("GET", HTTP_HOST="evil.example")) == 100


def test_the_app_applies_the_same_rule_when_called_directly(tmp_path):
    app = create_app(service=object(), config=ServeConfig(loopback_only=True, auth_token="t", max_body_bytes=10))
    client = app.test_client()
    refused = client.get("/health", headers={"Host": "evil.example"})
    assert refused.status_code == 403 and refused.json["error_code"] == "APIG.0101"
    assert client.post("/", data=b"x" * 20, headers={"X-Auth-Token": "t"}).status_code == 413
    assert client.post("/", data=b"{}", headers={"X-Auth-Token": "u"}).status_code == 401
    assert app.admit(environ(HTTP_HOST="localhost", HTTP_X_AUTH_TOKEN="t")) == 10  # the edge's hook
