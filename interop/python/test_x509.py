"""Self-signed X.509 device authentication: the registered SHA-1 thumbprint decides."""
import shutil
import subprocess

import pytest
from azure.iot.device.exceptions import ClientError

from hubtest import call, new_id, sha1_thumbprint


@pytest.fixture
def make_cert(tmp_path):
    """make_cert(name, common_name) -> (cert_file, key_file): a fresh self-signed RSA certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command-line tool is required for the X.509 tests", pytrace=False)

    def make(name, common_name):
        cert_file, key_file = tmp_path / (name + ".cert.pem"), tmp_path / (name + ".key.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "1",
                        "-subj", "/CN=" + common_name, "-keyout", str(key_file), "-out", str(cert_file)],
                       check=True, capture_output=True, timeout=60)
        return str(cert_file), str(key_file)

    return make


@pytest.fixture
def x509_device(devices, registry, make_cert):
    """A device registered with the thumbprint of a fresh certificate: (device_id, cert, key)."""
    device_id = new_id("x509")
    cert_file, key_file = make_cert("device", device_id)
    thumbprint = sha1_thumbprint(cert_file)
    created = call(registry.create_device_with_x509, device_id, thumbprint, None, "enabled")
    devices.track(device_id)
    assert created.authentication.type == "selfSigned"
    assert created.authentication.x509_thumbprint.primary_thumbprint.upper() == thumbprint
    return device_id, cert_file, key_file


def test_registered_certificate_connects_and_gets_twin(devices, x509_device):
    device_id, cert_file, key_file = x509_device
    client = devices.x509_client(device_id, cert_file, key_file)
    call(client.connect)
    assert client.connected
    twin = call(client.get_twin)
    assert isinstance(twin["desired"].get("$version"), int), twin
    call(client.patch_twin_reported_properties, {"auth": "x509"})
    assert call(client.get_twin)["reported"].get("auth") == "x509"


def test_certificate_with_other_thumbprint_is_refused(devices, x509_device, make_cert):
    device_id, _, _ = x509_device
    other_cert, other_key = make_cert("impostor", device_id)
    client = devices.x509_client(device_id, other_cert, other_key)
    # CONNACK "not authorized" (CredentialError) or a refused handshake (ConnectionFailedError)
    with pytest.raises(ClientError):
        call(client.connect)
    assert not client.connected
