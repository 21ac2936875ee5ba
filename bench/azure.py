"""Azure upload benchmark: godwit against azcopy, into Azurite over HTTP and HTTPS.

Everything runs on this machine: a 2 GiB raw image (60% random data in 1 MiB extents, 40% holes,
fixed seed) is uploaded into a fresh in-memory Azurite per run (Azurite keeps memory after
deletes, so it is restarted between large runs) by:

1. godwit's initial cycle (``godwit.engine.lifecycle.start``) into an AzureBlobStore cache (packs are
   block blobs), then a delta cycle after 1% of the image is rewritten in scattered 64 KiB writes;
2. godwit's page-blob replica (``PageBlobReplica``, the mover's path): the image's data extents
   written as a fixed VHD, then the same scattered writes and a seal (a blob snapshot);
3. ``azcopy copy`` of the image as a page blob and as a block blob, with default settings and
   with ``AZCOPY_CONCURRENCY_VALUE=4``.

MB/s is 10**6 bytes of image size (holes included) per wall second. "requests" counts HTTP
requests sent by godwit (retries included). Azurite is one Node thread on the same CPUs: it is the
bottleneck here, so these figures rank the clients on this machine; they are not Azure's speeds.

    .venv/bin/python bench/azure.py [--size-gib 2] [--schemes http,https] [--no-azcopy] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import blake3
from benchimage import MIB, key, log, make_image

# Run as a script, this file's folder heads sys.path, and this file (azure.py) would shadow the
# azure package of the SDK: drop the folder before anything imports azure.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _HERE]

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
WRITE = 64 << 10
ACCOUNT = "godwitbench"
KEY_ENV = "GODWIT_BENCH_AZURITE_KEY"
SERVER = "bench"









def scattered_writes(size: int, seed: int, fraction: float) -> list[tuple[int, bytes]]:
    count = max(1, round(size * fraction / WRITE))
    slots = random.Random(seed + 1).sample(range(size // WRITE), count)
    k = key(seed, "delta")
    return [(s * WRITE, blake3.blake3(s.to_bytes(8, "little"), key=k).digest(length=WRITE)) for s in slots]


def data_extents(path: Path) -> Iterator[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                return
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, end - start
            pos = end
    finally:
        os.close(fd)


# -- Azurite and azcopy --------------------------------------------------------------------------

def find_tool(env: str, candidates: list[Path], name: str) -> str | None:
    for c in [os.environ.get(env, ""), *map(str, candidates), shutil.which(name) or ""]:
        if c and Path(c).is_file():
            if not os.access(c, os.X_OK):
                os.chmod(c, 0o755)  # npm ships azcopy without its execute bit
            return c
    return None


class Azurite:
    """One in-memory Azurite blob service; a new one per run."""

    def __init__(self, binary: str, workdir: Path, key: str, *, https: bool) -> None:
        self.binary, self.workdir, self.key, self.https = binary, workdir, key, https
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def ca_file(self) -> Path | None:
        return self.workdir / "ca.pem" if self.https else None

    def __enter__(self) -> Azurite:
        from azure.core.exceptions import AzureError

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--skipApiVersionCheck",
                "--disableTelemetry", "--silent", "--inMemoryPersistence"]
        if self.https:
            args += ["--cert", str(self.workdir / "cert.pem"), "--key", str(self.workdir / "key.pem")]
        env = dict(os.environ, AZURITE_ACCOUNTS=f"{ACCOUNT}:{self.key}")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"Azurite exited at start with code {self.proc.returncode}")
            with contextlib.suppress(OSError, ValueError, AzureError), self.service() as svc:
                svc.get_account_information()
                return self
            if time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit("Azurite did not answer within 30 s")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def service(self) -> Any:
        from azure.core.credentials import AzureNamedKeyCredential
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.url, credential=AzureNamedKeyCredential(ACCOUNT, self.key),
                                 connection_verify=str(self.ca_file) if self.ca_file else True, retry_total=0)

    def container(self, name: str) -> str:
        with self.service() as svc:
            svc.create_container(name)
        return name

    def options(self, container: str, **extra: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {"account_url": self.url, "container": container,
                                "credential": {"kind": "account_key", "env": KEY_ENV}, **extra}
        if self.ca_file:
            opts["ca_file"] = str(self.ca_file)
        return opts


class Requests:
    """Counts HTTP requests through the SDK's raw_request_hook (thread-safe)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        with self._lock:
            self.n += 1

    def take(self) -> int:
        with self._lock:
            n, self.n = self.n, 0
            return n


# -- runs --------------------------------------------------------------------------------------

@dataclass
class Row:
    tool: str
    scheme: str
    seconds: float
    mb_s: float | None = None
    requests: int | None = None
    note: str = ""


def toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)  # strings and numbers: JSON's spelling is TOML's


def godwit_cycles(az: Azurite, image: Path, workdir: Path, writes: list[tuple[int, bytes]],
                  size: int, validate: str) -> list[Row]:
    """Initial and delta cycle of a project whose cache is an Azure container."""
    from godwit.azure.settings import parse_options
    from godwit.engine import inventory
    from godwit.engine import lifecycle as replication
    from godwit.project import project
    from godwit.project.project import STORE_CONFIG_KEY
    from godwit.stores.azure import AzureBlobStore
    from godwit.stores.throttle import ThrottledStore, TokenBucket

    scheme = "https" if az.https else "http"
    disk = workdir / f"disk-{scheme}-{validate}.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    root = workdir / f"project-{scheme}-{validate}"
    project.init(root, "bench").close()
    container = az.container("cache")
    opts = az.options(container, validate_content=validate)
    text = (root / "godwit.toml").read_text()
    start = text.index("[cache]\n")
    end = text.index("\n[", start)
    section = "[cache]\nkind = \"azure\"\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in opts.items())
    (root / "godwit.toml").write_text(text[:start] + section + text[end:])
    proj = project.open_project(root)
    counter = Requests()
    try:
        # The project's own store, with a request counter in its pipeline (the bench's only
        # reach into the project's internals).
        settings = parse_options(proj.config.cache.options, "cache", root)
        store = AzureBlobStore(replace(settings, extra={"raw_request_hook": counter}))
        proj.bucket = TokenBucket(lambda: None)
        proj._store = ThrottledStore(store, proj.bucket)
        doc = {"format": 1, "id": secrets.token_hex(16), "created": time.time()}
        proj.store.put(STORE_CONFIG_KEY, json.dumps(doc).encode(), overwrite=False)
        counter.take()
        inventory.add_server(proj, SERVER, [str(disk)])
        t0 = time.perf_counter()
        res = replication.start(proj, SERVER)
        initial = time.perf_counter() - t0
        assert res is not None
        rows = [Row("godwit initial cycle (block blobs)", scheme, initial, size / initial / 1e6, counter.take(),
                    f"{res.bytes_sent / MIB:.0f} MiB in {res.packs_uploaded} packs, validate {validate}, "
                    f"bottleneck {res.bottleneck}")]
        fd = os.open(disk, os.O_WRONLY)
        try:
            for offset, data in writes:
                os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        t0 = time.perf_counter()
        res = replication.cycle(proj, SERVER)
        delta = time.perf_counter() - t0
        rows.append(Row("godwit delta cycle", scheme, delta, None, counter.take(),
                        f"{len(writes)} scattered 64 KiB writes; {res.bytes_sent / MIB:.1f} MiB in "
                        f"{res.packs_uploaded} packs; re-reads the image"))
        return rows
    finally:
        proj.close()
        disk.unlink(missing_ok=True)


def godwit_replica(az: Azurite, image: Path, workdir: Path, writes: list[tuple[int, bytes]], size: int,
                   validate: str) -> list[Row]:
    """The image's data extents into a page-blob replica, then the scattered writes and a seal."""
    from azure.storage.blob import BlobServiceClient

    from godwit.azure.clients import client_kwargs, credential_for
    from godwit.azure.settings import parse_options
    from godwit.replicas.base import ReplicaDisk
    from godwit.replicas.pageblob import REPLICA_CONCURRENCY, REPLICA_KEYS, PageBlobReplica

    scheme = "https" if az.https else "http"
    container = az.container("replicas")
    counter = Requests()
    parsed = parse_options(az.options(container, validate_content=validate), "replicas", workdir,
                           allowed=REPLICA_KEYS, default_concurrency=REPLICA_CONCURRENCY)
    settings = replace(parsed, extra={"raw_request_hook": counter})
    service = BlobServiceClient(settings.account_url, credential=credential_for(settings),
                                **client_kwargs(settings, "data", pool=settings.max_concurrency + 4))
    replica: ReplicaDisk = PageBlobReplica(service.get_blob_client(container, "bench-disk0.vhd"), settings,
                                           service=service)
    chunk = 32 * MIB
    try:
        t0 = time.perf_counter()
        replica.begin(1, [(0, size)], size)
        with open(image, "rb", buffering=0) as f:
            for offset, length in data_extents(image):
                for o in range(offset, offset + length, chunk):
                    replica.write(o, os.pread(f.fileno(), min(chunk, offset + length - o), o))
        replica.seal(1)
        full = time.perf_counter() - t0
        rows = [Row("godwit page-blob replica, data extents", scheme, full, size / full / 1e6, counter.take(),
                    f"{settings.max_concurrency} threads, Put Page of up to 4 MiB, validate {validate}")]
        t0 = time.perf_counter()
        replica.begin(2, [(o, len(d)) for o, d in writes], size)
        for offset, data in writes:
            replica.write(offset, data)
        replica.seal(2)
        delta = time.perf_counter() - t0
        rows.append(Row("godwit page-blob replica, delta + seal", scheme, delta, None, counter.take(),
                        f"{len(writes)} writes of 64 KiB, write-behind; seal = snapshot"))
        return rows
    finally:
        replica.close()


def azcopy(az: Azurite, binary: str, image: Path, workdir: Path, blob_type: str, concurrency: int | None,
           size: int) -> Row:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    scheme = "https" if az.https else "http"
    container = az.container("azcopy")
    sas = generate_container_sas(ACCOUNT, container, account_key=az.key,
                                 permission=ContainerSasPermissions(read=True, write=True, create=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=2))
    env = dict(os.environ, AZCOPY_LOG_LOCATION=str(workdir / "azcopy-logs"),
               AZCOPY_JOB_PLAN_LOCATION=str(workdir / "azcopy-plans"))
    if az.ca_file:
        env["SSL_CERT_FILE"] = str(az.ca_file)  # otherwise azcopy hangs at 0% on our CA
    if concurrency:
        env["AZCOPY_CONCURRENCY_VALUE"] = str(concurrency)
    argv = [binary, "copy", str(image), f"{az.url}/{container}/image?{sas}", "--from-to", "LocalBlob",
            "--blob-type", blob_type, "--output-type", "text", "--log-level", "ERROR"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or "Final Job Status: Completed" not in proc.stdout:
        tail = (proc.stdout + proc.stderr).replace(sas, "SAS")[-400:]
        return Row(f"azcopy {blob_type}", scheme, seconds, note=f"FAILED: {tail}")
    label = f"azcopy {blob_type}" + (f", AZCOPY_CONCURRENCY_VALUE={concurrency}" if concurrency else ", default")
    return Row(label, scheme, seconds, size / seconds / 1e6, None, "reports on a ~2 s tick")


# -- main ------------------------------------------------------------------------------------------

def render(rows: list[Row], params: dict[str, Any]) -> str:
    head = ("tool", "scheme", "seconds", "MB/s", "requests", "notes")
    table = [head] + [(r.tool, r.scheme, f"{r.seconds:.2f}", f"{r.mb_s:.0f}" if r.mb_s else "-",
                       str(r.requests) if r.requests is not None else "-", r.note) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = [f"image {params['size'] / GIB:g} GiB ({params['data_bytes'] / MIB:.0f} MiB data in 1 MiB extents, "
             f"rest holes), seed {params['seed']}; {params['writes']} scattered 64 KiB writes for the deltas; "
             f"{os.cpu_count()} CPUs, load average {params['load']}", ""]
    for row in table:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:5])) + "  " + row[5])
    lines.append("\nMB/s = 10^6 bytes of image size (holes included) per wall second; one fresh Azurite per run;"
                 "\nAzurite shares the CPUs with the client: compare rows of one run, not with Azure.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--delta-fraction", type=float, default=0.01)
    ap.add_argument("--schemes", default="http,https", help="comma-separated: http, https")
    ap.add_argument("--no-azcopy", action="store_true", help="skip the azcopy runs")
    ap.add_argument("--validate", default="md5,none",
                    help="godwit's validate_content settings to run, comma-separated (md5, none)")
    ap.add_argument("--workdir", help="a folder for the image and projects (default: a temp dir in /var/tmp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    size = int(args.size_gib * GIB) // MIB * MIB
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if not set(schemes) <= {"http", "https"}:
        ap.error("--schemes takes http and/or https")
    validates = [v.strip() for v in args.validate.split(",") if v.strip()]
    if not set(validates) <= {"md5", "none"}:
        ap.error("--validate takes md5 and/or none")
    azurite_bin = find_tool("GODWIT_AZURITE", [REPO / ".tools/node_modules/.bin/azurite-blob"], "azurite-blob")
    if azurite_bin is None:
        ap.error("Azurite is missing: npm install --prefix .tools azurite@3")
    azcopy_bin = None if args.no_azcopy else find_tool(
        "GODWIT_AZCOPY", [REPO / ".tools/node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64"],
        "azcopy")
    if azcopy_bin is None and not args.no_azcopy:
        log("azcopy is missing (npm install --prefix .tools @azure-tools/azcopy-linux; apt-get install "
            "libsecret-1-0): its rows are skipped")

    load_before = os.getloadavg()[0]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="godwit-azure-bench-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    os.environ[KEY_ENV] = key
    rows: list[Row] = []
    try:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
        cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
        cert.private_key_pem.write_to_path(str(workdir / "key.pem"))

        image = workdir / "disk.img"
        log(f"generating a {size / GIB:g} GiB image")
        data_bytes = make_image(image, size, args.seed)
        writes = scattered_writes(size, args.seed, args.delta_fraction)
        for scheme in schemes:
            https = scheme == "https"
            for validate in validates:
                log(f"{scheme}: godwit initial and delta cycle, validate {validate}")
                with Azurite(azurite_bin, workdir, key, https=https) as az:
                    rows += godwit_cycles(az, image, workdir, writes, size, validate)
                log(f"{scheme}: godwit page-blob replica, validate {validate}")
                with Azurite(azurite_bin, workdir, key, https=https) as az:
                    rows += godwit_replica(az, image, workdir, writes, size, validate)
            if azcopy_bin:
                for blob_type in ("PageBlob", "BlockBlob"):
                    for conc in (None, 4):
                        log(f"{scheme}: azcopy {blob_type} concurrency {conc or 'default'}")
                        with Azurite(azurite_bin, workdir, key, https=https) as az:
                            rows.append(azcopy(az, azcopy_bin, image, workdir, blob_type, conc, size))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    params = {"size": size, "seed": args.seed, "data_bytes": data_bytes, "writes": len(writes),
              "load": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"}
    if args.json:
        print(json.dumps({"params": params, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(render(rows, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
