"""The broker as ElastiCache runs it: redis-server, TLS only, AUTH token, the parameter group applied."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.backoff import NoBackoff
from redis.retry import Retry

# ElastiCache parameters with no redis-server equivalent: not applied, each listed in the summary.
ELASTICACHE_ONLY: dict[str, str] = {
    "reserved-memory-percent": "ElastiCache keeps this share of node memory back from maxmemory",
    "reserved-memory": "ElastiCache keeps these bytes back from maxmemory",
    "close-on-replica-write": "ElastiCache closes clients that write to a replica",
    "cluster-allow-pubsubshard-when-down": "cluster mode only",
    "cluster-allow-reads-when-down": "cluster mode only",
    "cluster-enabled": "fixed at node creation; cluster mode is off for a Celery broker",
    "cluster-require-full-coverage": "cluster mode only",
}
# ElastiCache AUTH tokens: 16-128 printable ASCII characters, none of these.
AUTH_TOKEN_FORBIDDEN = set(' "/@')


def auth_token_problems(token: str) -> list[str]:
    """Why ElastiCache would refuse `token` as an AUTH token (empty when it accepts it)."""
    problems = []
    if not 16 <= len(token) <= 128:
        problems.append(f"{len(token)} characters (16-128 allowed)")
    bad = sorted({c for c in token if c in AUTH_TOKEN_FORBIDDEN or not 32 < ord(c) < 127})
    if bad:
        problems.append(f"characters {''.join(bad)!r} not allowed")
    return problems


@dataclass
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path, host: str) -> Certificates:
    """A throwaway CA and a server certificate for `host` (an IP address, as SAN), valid one day."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "celery-fleet rehearsal CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files.key_file.chmod(0o600)
    return files


@dataclass
class TlsBroker:
    """redis-server listening on `host:port` with TLS only (the plain port is off) and requirepass."""

    host: str
    port: int
    token: str
    directory: Path
    certificates: Certificates
    applied: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> TlsBroker:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        args = [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--bind",
            self.host,
            "--tls-cert-file",
            str(self.certificates.cert_file),
            "--tls-key-file",
            str(self.certificates.key_file),
            "--tls-ca-cert-file",
            str(self.certificates.ca_file),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            self.token,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "redis-server exited at start:\n" + (self.directory / "redis.log").read_text()
                )
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        """A client connecting as the stage's clients do: TLS, certificate and host name verified."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.token,
            ssl=True,
            ssl_ca_certs=str(self.certificates.ca_file),
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
        )

    def apply_parameters(self, parameters: dict[str, str]) -> None:
        """CONFIG SET each parameter; ElastiCache-only ones are recorded, refused ones too."""
        client = self.client()
        for name, value in parameters.items():
            if name in ELASTICACHE_ONLY:
                self.not_applicable[name] = value
                continue
            try:
                client.config_set(name, value)
            except redis.ResponseError as error:
                self.refused[name] = f"{value}: {error}"
                continue
            self.applied[name] = str(client.config_get(name).get(name))

    def plain_port_refused(self) -> bool:
        """Whether a plain-text connection fails (TLS only, as `TransitEncryptionMode: required`)."""
        try:
            plain = redis.Redis(
                host=self.host,
                port=self.port,
                password=self.token,
                socket_timeout=1,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), retries=0),
            )
            plain.ping()
        except (redis.ConnectionError, redis.TimeoutError, ssl.SSLError, redis.ResponseError):
            return True
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
