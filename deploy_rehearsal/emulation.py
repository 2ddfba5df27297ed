"""The local emulation: moto in process (mock_aws), fake credentials, one set of clients per account, and a
network guard that refuses any connection or name lookup beyond loopback while the rehearsal runs."""
import contextlib
import ipaddress
import os
import socket
from typing import Dict, Iterator, List, Tuple

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAREHEARSALFAKEKEY",
    "AWS_SECRET_ACCESS_KEY": "rehearsal-fake-secret",
    "AWS_SESSION_TOKEN": "rehearsal-fake-token",
}
# Variables that could point boto3 at real credentials, a real endpoint or a fixed moto account.
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "MOTO_ACCOUNT_ID")


class NetworkRefused(OSError):
    """The rehearsal tried to reach beyond loopback."""


def _loopback(host) -> bool:
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def network_guard() -> Iterator[List[str]]:
    """Refuse (and record) every connection and name lookup to anything but loopback or a local socket."""
    refused: List[str] = []
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def allowed(sock, address) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True  # AF_UNIX and friends stay on this machine
        return _loopback(address[0] if isinstance(address, tuple) else address)

    def connect(sock, address):
        if not allowed(sock, address):
            refused.append(f"connect {address}")
            raise NetworkRefused(f"deploy rehearsal: connection to {address} refused (nothing may reach AWS)")
        return original_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(sock, address):
            refused.append(f"connect {address}")
            raise NetworkRefused(f"deploy rehearsal: connection to {address} refused (nothing may reach AWS)")
        return original_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            refused.append(f"resolve {host}")
            raise NetworkRefused(f"deploy rehearsal: name lookup of {host} refused (nothing may reach AWS)")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    try:
        yield refused
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = original_connect, original_connect_ex, original_getaddrinfo


@contextlib.contextmanager
def fake_aws_environment() -> Iterator[None]:
    """Fake credentials, no profile, no config or credentials file, no instance metadata."""
    saved = dict(os.environ)
    for name in _CLEARED:
        os.environ.pop(name, None)
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
        os.environ.pop(name)
    os.environ.update(FAKE_CREDENTIALS)
    os.environ.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Clients:
    """boto3 clients per (service, account, region). moto keeps one backend per account: every request of a
    client carries its account in moto's `x-moto-account-id` header, so nothing global switches accounts."""

    def __init__(self) -> None:
        import boto3

        self._session = boto3.session.Session(**{k.lower(): v for k, v in FAKE_CREDENTIALS.items()})
        self._clients: Dict[Tuple[str, str, str], object] = {}

    def __call__(self, service: str, account: str, region: str):
        key = (service, account, region)
        if key not in self._clients:
            from botocore.config import Config

            client = self._session.client(service, region_name=region, config=Config(retries={"max_attempts": 1}))

            def add_account(request, **_):
                request.headers["x-moto-account-id"] = account

            client.meta.events.register("before-sign.*.*", add_account)
            self._clients[key] = client
        return self._clients[key]
