"""Mutual TLS served by the server itself (the fake engine: only the connection is under test):
a client certificate from the hospital's CA gets in and names its tenant, one missing or signed
by another CA does not get a connection; new certificate files are served without a restart."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import ENGINE_ARGS

# The fake engine (only the connection is under test), but outside the fast tier, which stays
# under its 90 s: a server of its own would add seconds there; beside the engine tests it adds
# no wall time.
pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


class Certificates:
    def __init__(self, folder: Path):
        self.folder = folder
        self.ca = trustme.CA(organization_name="Hospital internal CA")
        self.other_ca = trustme.CA(organization_name="Somebody else")
        self.good = self.ca.issue_cert("viewer.hospital.test", organization_name="radiology")
        self.wrong = self.other_ca.issue_cert("viewer.hospital.test", organization_name="radiology")
        self.cert, self.key, self.client_ca = (
            folder / n for n in ("cert.pem", "key.pem", "ca.pem")
        )
        self.serve(self.ca.issue_cert("127.0.0.1", common_name="lingshu one"))
        self.ca.cert_pem.write_to_path(str(self.client_ca))

    def serve(self, leaf: trustme.LeafCert) -> None:
        """Write the server's certificate files, as a cert-manager renewal would."""
        leaf.private_key_pem.write_to_path(str(self.key))
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        self.cert.write_bytes(chain)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def mtls_server(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from tests.utils.in_process import start_fake_server

    good = client_context(certificates.ca, certificates.good)
    running = start_fake_server(
        tmp_path_factory.mktemp("mtls") / "server.log",
        *ENGINE_ARGS,
        "--tls-cert-file",
        str(certificates.cert),
        "--tls-key-file",
        str(certificates.key),
        "--tls-ca-file",
        str(certificates.client_ca),
        "--tls-client-auth",
        "required",
        "--tls-tenant-attribute",
        "O",
        get=lambda url: httpx.get(url, verify=good, timeout=2),
    )
    yield running
    running.stop()


def served_common_name(server, certificates: Certificates) -> str:
    context = client_context(certificates.ca, certificates.good)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
    return subject["commonName"]


def test_a_client_certificate_from_the_hospital_ca_is_the_callers_identity(
    mtls_server, certificates
):
    context = client_context(certificates.ca, certificates.good)
    with httpx.Client(base_url=mtls_server.base_url, verify=context, timeout=10) as http:
        models = http.get("/v1/models")
        assert models.status_code == 200, models.text
        body = {"model": "lingshu-demo", "messages": [{"role": "user", "content": "Hi"}]}
        assert http.post("/v1/chat/completions", json={**body, "max_tokens": 2}).status_code == 200
    lines = [json.loads(x) for x in mtls_server.log_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("route") == "/v1/models"]
    assert access[-1]["identity"].startswith("cert:")
    assert "O=radiology" in access[-1]["identity"]
    assert access[-1]["tenant"] == "radiology"


@pytest.mark.parametrize("which", ["missing", "wrong"])
def test_no_connection_without_a_certificate_from_the_hospital_ca(mtls_server, certificates, which):
    cert = None if which == "missing" else certificates.wrong
    context = client_context(certificates.ca, cert)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{mtls_server.base_url}/v1/models", verify=context, timeout=10)


def test_new_certificate_files_are_served_without_a_restart(mtls_server, certificates):
    assert served_common_name(mtls_server, certificates) == "lingshu one"
    certificates.serve(certificates.ca.issue_cert("127.0.0.1", common_name="lingshu two"))
    deadline = time.monotonic() + 10
    while served_common_name(mtls_server, certificates) != "lingshu two":
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.2)
