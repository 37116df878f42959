"""Helpers shared by the interop tests: bounded SDK calls, HTTP error checks, ids and keys.

Every blocking SDK call goes through `call()`: the Python device SDK's get_twin/patch calls and
handler setters block until the hub answers, so a hub that never answers must fail the test
instead of hanging CI.
"""
import base64
import hashlib
import os
import queue
import ssl
import threading
import time
import uuid

import pytest
from msrest.exceptions import HttpOperationError

STEP_TIMEOUT = float(os.environ.get("INTEROP_STEP_TIMEOUT", "15"))


class SdkCallTimeout(AssertionError):
    """An SDK call did not return in time: the hub never answered."""


def call(fn, *args, timeout=STEP_TIMEOUT, **kwargs):
    """Run fn(*args, **kwargs) in a daemon thread; raise SdkCallTimeout if it does not return in time."""
    box = {}

    def runner():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as error:  # noqa: B902 - re-raised in the caller's thread
            box["error"] = error

    name = getattr(fn, "__qualname__", repr(fn))
    worker = threading.Thread(target=runner, name="sdk-call:" + name, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SdkCallTimeout("{} did not return within {}s (hub never answered?)".format(name, timeout))
    if "error" in box:
        raise box["error"]
    return box.get("value")


def set_handler(client, attribute, handler, timeout=STEP_TIMEOUT):
    """Set an SDK receive handler; the setter blocks until the SUBSCRIBE is acknowledged."""
    call(setattr, client, attribute, handler, timeout=timeout)


def http_error(fn, *args, timeout=STEP_TIMEOUT, **kwargs):
    """Call a service SDK method that must fail; return (HTTP status, response body text)."""
    with pytest.raises(HttpOperationError) as info:
        call(fn, *args, timeout=timeout, **kwargs)
    response = info.value.response
    return response.status_code, response.text or ""


def new_id(kind):
    """A fresh identity id, so every test is independent of every other."""
    return "interop-py-{}-{}".format(kind, uuid.uuid4())


def new_key():
    """A random 32-byte symmetric key, base64 (the format the hub generates)."""
    return base64.b64encode(os.urandom(32)).decode()


def is_generated_key(key):
    """True if key looks like a hub-generated key: 44 chars of base64 for 32 bytes."""
    if not isinstance(key, str) or len(key) != 44:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 32
    except ValueError:
        return False


def sha1_thumbprint(cert_pem_path):
    """The SHA-1 thumbprint of a PEM certificate, upper-case hex as IoT Hub displays it."""
    with open(cert_pem_path) as pem:
        der = ssl.PEM_cert_to_DER_cert(pem.read())
    return hashlib.sha1(der).hexdigest().upper()


def next_matching(items, predicate, timeout=STEP_TIMEOUT, what="item"):
    """Take items from a queue until one satisfies predicate; fail after timeout with what was seen."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching {} within {}s; received: {!r}".format(what, timeout, seen))
        try:
            item = items.get(timeout=left)
        except queue.Empty:
            continue
        if predicate(item):
            return item
        seen.append(item)


def wait_until(probe, timeout=STEP_TIMEOUT, interval=0.2, what="condition"):
    """Poll probe() until it returns a truthy value; return it, or fail with the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("{} not reached within {}s (last value {!r})".format(what, timeout, last))


def user_keys(section):
    """The user-visible members of a twin section (without $version/$metadata)."""
    return {k: v for k, v in (section or {}).items() if not k.startswith("$")}
