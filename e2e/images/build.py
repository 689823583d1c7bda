#!/usr/bin/env python3
"""Builds the container images of the real-node tests into one OCI image archive.

No container registry is reachable from the test machine, so every image the operator renders
for a minimal clinic is made here, under the exact reference the operator names, from Debian's
packages (one shared base layer) plus a small layer of its own with the user, paths, modes and
entrypoint of the upstream image it stands in for. docs/testing.md has the side-by-side table.

    build.py OUT_DIR --standin BIN --pause BIN --coredns BIN --traefik BIN

writes OUT_DIR/images.oci.tar (import with `ctr images import`), OUT_DIR/images.json (each
reference with what it stands for) and OUT_DIR/packages.txt (the Debian versions used).
Only the standard library is used.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Debian packages of the shared base layer (their dependencies are resolved by apt).
PACKAGES = [
    "dash", "bash", "coreutils", "sed", "grep", "findutils", "gzip", "tar", "mawk", "procps",
    "mariadb-server", "mariadb-client", "nginx", "prometheus-mysqld-exporter",
    "prometheus-nginx-exporter", "tini", "gettext-base", "moreutils", "tzdata", "ca-certificates",
]

# Accounts of the upstream images: mysql 999 (mariadb), nginx 101 (nginx-alpine), the OpenMRS
# backend's 1001 (with group 0), nobody 65534 (the exporters).
PASSWD = """root:x:0:0:root:/root:/bin/bash
nginx:x:101:101:nginx:/var/cache/nginx:/usr/sbin/nologin
mysql:x:999:999:MariaDB:/var/lib/mysql:/usr/sbin/nologin
openmrs:x:1001:0:OpenMRS:/openmrs:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
nginx:x:101:
mysql:x:999:
nogroup:x:65534:
"""
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def fetch_debs(work: Path) -> list[Path]:
    """Downloads PACKAGES and their whole dependency closure (an empty dpkg status makes apt
    treat nothing as installed) without touching the machine's own package state."""
    archives = work / "archives"
    (archives / "partial").mkdir(parents=True)
    status = work / "status"
    status.write_text("")
    command = [
        "apt-get", "-q", "-y",
        f"-o=Dir::State::status={status}",
        f"-o=Dir::Cache::archives={archives}",
        "-o=APT::Install-Recommends=false",
        "-o=Debug::NoLocking=1",
        "-o=APT::Sandbox::User=root",
        "install", "--download-only", *PACKAGES,
    ]
    if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine may have no package lists yet.
        run("apt-get", "update", "-qq")
        run(*command, stdout=subprocess.DEVNULL)
    return sorted(archives.glob("*.deb"))


def make_rootfs(debs: list[Path], rootfs: Path, pause: Path, coredns: Path, traefik: Path) -> None:
    for deb in debs:
        run("dpkg-deb", "-x", str(deb), str(rootfs))
    # Documentation is not needed to run anything.
    for rel in ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian"]:
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    # What maintainer scripts would have done, as far as the images need it.
    links = {
        "usr/bin/awk": "mawk",
        "var/run": "/run",
        "var/lock": "/run/lock",
        "etc/mysql/my.cnf": "/etc/mysql/clinic-image.cnf",
        # nginx-alpine images send their logs to the container's output.
        "var/log/nginx/access.log": "/dev/stdout",
        "var/log/nginx/error.log": "/dev/stderr",
    }
    for rel, target in links.items():
        path = rootfs / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    (rootfs / "etc/passwd").write_text(PASSWD)
    (rootfs / "etc/group").write_text(GROUP)
    for d in ["tmp", "run", "run/lock", "proc", "sys", "dev", "root", "etc/mysql/conf.d",
              "var/cache/nginx", "usr/share/nginx/html"]:
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc/hostname").write_text("localhost\n")
    shutil.copy(pause, rootfs / "pause")
    shutil.copy(coredns, rootfs / "coredns")
    shutil.copy(traefik, rootfs / "traefik")


class Layer:
    """A layer tar built entry by entry, so owner and mode are exactly the upstream image's."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _parents(self, path: str):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dir(d, 0o755)

    def dir(self, path, mode, uid=0, gid=0):
        path = path.strip("/")
        self._parents(path)
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, gid
        self.tar.addfile(info)
        self.dirs.add(path)

    def file(self, path, data: bytes, mode, uid=0, gid=0):
        path = path.strip("/")
        self._parents(path)
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
        self.tar.addfile(info, io.BytesIO(data))

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def source(rel: str) -> bytes:
    return (HERE / rel).read_bytes()


def image_layers(rootfs: Path, standin: Path) -> dict[str, bytes]:
    layers = {}

    mariadb = Layer()
    mariadb.file("usr/local/bin/docker-entrypoint.sh", source("mariadb/docker-entrypoint.sh"), 0o755)
    mariadb.file("usr/local/bin/healthcheck.sh", source("mariadb/healthcheck.sh"), 0o755)
    mariadb.file("etc/mysql/clinic-image.cnf", source("mariadb/my.cnf"), 0o644)
    mariadb.dir("var/lib/mysql", 0o755, 999, 999)
    layers["mariadb"] = mariadb.bytes()

    mysqld_exporter = Layer()
    mysqld_exporter.file("bin/mysqld_exporter", source("exporters/mysqld_exporter"), 0o755)
    layers["mysqld-exporter"] = mysqld_exporter.bytes()

    nginx_exporter = Layer()
    nginx_exporter.file("usr/bin/nginx-prometheus-exporter", source("exporters/nginx-prometheus-exporter"), 0o755)
    layers["nginx-exporter"] = nginx_exporter.bytes()

    frontend = Layer()
    frontend.file("etc/nginx/nginx.conf", source("frontend/nginx.conf"), 0o644)
    frontend.file("usr/local/bin/startup.sh", source("frontend/startup.sh"), 0o755)
    frontend.file("usr/share/nginx/html/index.html", source("frontend/index.html"), 0o644)
    layers["frontend"] = frontend.bytes()

    backend = Layer()
    # Upstream adds tini with `curl -o` (0644) and `chmod g+rx`: only group 0 may execute it.
    backend.file("usr/bin/tini", (rootfs / "usr/bin/tini").read_bytes(), 0o654)
    # Upstream: `chmod -R g+rw /openmrs && chown -R 1001 /openmrs`, then the scripts and the war
    # are copied in as root.
    backend.dir("openmrs", 0o775, 1001, 0)
    backend.dir("openmrs/data", 0o775, 1001, 0)
    for sub in ["modules", "owa", "configuration", "configuration_checksums", "complex_obs", "activemq-data"]:
        backend.dir(f"openmrs/data/{sub}", 0o775, 1001, 0)
    backend.file("openmrs/startup.sh", source("backend/startup.sh"), 0o755)
    backend.dir("openmrs/distribution", 0o775, 1001, 0)
    backend.dir("openmrs/distribution/openmrs_core", 0o775, 1001, 0)
    backend.file(
        "openmrs/distribution/openmrs_core/openmrs.war",
        b"Placeholder: the OpenMRS war is not in any registry the test machine reaches.\n",
        0o644,
    )
    # Upstream: `chmod -R g+rx /usr/local/tomcat`, setenv.sh g+rw, webapps/logs/work/temp g+rw,
    # webapps owned by 1001.
    backend.dir("usr/local/tomcat", 0o775)
    backend.dir("usr/local/tomcat/bin", 0o775)
    backend.file("usr/local/tomcat/bin/catalina.sh", source("backend/catalina.sh"), 0o755)
    backend.file("usr/local/tomcat/bin/openmrs-standin", standin.read_bytes(), 0o755)
    backend.file("usr/local/tomcat/bin/setenv.sh", b"", 0o664)
    backend.dir("usr/local/tomcat/webapps", 0o775, 1001, 0)
    for sub in ["logs", "work", "temp"]:
        backend.dir(f"usr/local/tomcat/{sub}", 0o775)
    layers["backend"] = backend.bytes()

    # Upstream: busybox with the agent at /javaagent.jar (`chmod -R go+r`). The OpenTelemetry
    # Java agent is a Maven artifact, but the stand-in backend is no JVM to load it: the file is
    # a marker whose presence at -javaagent's path makes the stand-in export spans.
    otel_agent = Layer()
    otel_agent.file(
        "javaagent.jar",
        b"Placeholder: the stand-in backend is not a JVM; it exports spans itself when this file is copied in.\n",
        0o644,
    )
    layers["otel-agent"] = otel_agent.bytes()
    return layers


# Each image: its references, the layer of its own (if any) and its config, as upstream's.
IMAGES = [
    {
        "refs": ["docker.io/library/mariadb:10.11"],
        "stands_for": "MariaDB 10.11 official image",
        "layer": "mariadb",
        "config": {"User": "", "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["mariadbd"],
                   "ExposedPorts": {"3306/tcp": {}}},
    },
    {
        "refs": ["docker.io/prom/mysqld-exporter:v0.17.2"],
        "stands_for": "Prometheus mysqld-exporter",
        "layer": "mysqld-exporter",
        "config": {"User": "65534", "Entrypoint": ["/bin/mysqld_exporter"], "ExposedPorts": {"9104/tcp": {}}},
    },
    {
        "refs": ["docker.io/nginx/nginx-prometheus-exporter:1.4.2"],
        "stands_for": "NGINX Prometheus exporter",
        "layer": "nginx-exporter",
        "config": {"User": "65534", "Entrypoint": ["/usr/bin/nginx-prometheus-exporter"],
                   "ExposedPorts": {"9113/tcp": {}}},
    },
    {
        "refs": ["docker.io/openmrs/openmrs-reference-application-3-gateway:3.7.x"],
        "stands_for": "OpenMRS 3 gateway (nginx)",
        "layer": None,
        # nginx images stop with SIGQUIT, nginx's graceful shutdown (requests under way are
        # answered); SIGTERM, the default, drops them.
        "config": {"User": "", "Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}},
                   "StopSignal": "SIGQUIT"},
    },
    {
        "refs": ["docker.io/openmrs/openmrs-reference-application-3-frontend:3.7.x"],
        "stands_for": "OpenMRS 3 frontend (nginx serving the SPA)",
        "layer": "frontend",
        "config": {"User": "", "Cmd": ["/usr/local/bin/startup.sh"], "ExposedPorts": {"80/tcp": {}},
                   "StopSignal": "SIGQUIT"},
    },
    {
        "refs": [
            "docker.io/openmrs/openmrs-reference-application-3-backend:3.7.x-no-demo",
            "docker.io/openmrs/openmrs-reference-application-3-backend:3.7.x",
        ],
        "stands_for": "OpenMRS 3 backend (Tomcat + OpenMRS), here a stand-in server",
        "layer": "backend",
        "config": {"User": "1001", "WorkingDir": "/openmrs", "Entrypoint": ["/usr/bin/tini", "--"],
                   "Cmd": ["/openmrs/startup.sh"], "ExposedPorts": {"8080/tcp": {}}},
    },
    {
        "refs": ["ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.10.0"],
        "stands_for": "the OpenTelemetry Operator's Java agent image (the agent's jar and a cp)",
        "layer": "otel-agent",
        "config": {"User": "", "Cmd": ["cat", "/javaagent.jar"]},
    },
    {
        "refs": ["registry.k8s.io/pause:3.10"],
        "stands_for": "the pod sandbox (pause)",
        "layer": None,
        "config": {"User": "65535", "Entrypoint": ["/pause"]},
    },
    {
        "refs": ["registry.k8s.io/coredns/coredns:v1.12.4"],
        "stands_for": "CoreDNS (cluster DNS)",
        "layer": None,
        "config": {"User": "", "Entrypoint": ["/coredns"]},
    },
    {
        "refs": ["docker.io/library/traefik:v3.6"],
        "stands_for": "Traefik v3.6, the Gateway API implementation of the Gateway scenario (the real binary)",
        "layer": None,
        "config": {"User": "65532", "Entrypoint": ["/traefik"]},
    },
]


class Archive:
    """An OCI image layout written straight into a tar."""

    def __init__(self, path: Path):
        self.tar = tarfile.open(path, "w")
        self.seen = set()

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self.seen:
            self.seen.add(digest)
            self._add(f"blobs/sha256/{digest[7:]}", data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def blob_file(self, path: Path, media_type: str) -> dict:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        if digest not in self.seen:
            self.seen.add(digest)
            self.tar.add(path, arcname=f"blobs/sha256/{digest[7:]}")
        return {"mediaType": media_type, "digest": digest, "size": path.stat().st_size}

    def _add(self, name: str, data: bytes):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def close(self, index: dict):
        self._add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        self._add("index.json", json.dumps(index).encode())
        self.tar.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--standin", type=Path, required=True)
    parser.add_argument("--pause", type=Path, required=True)
    parser.add_argument("--coredns", type=Path, required=True)
    parser.add_argument("--traefik", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="clinic-images-") as tmp:
        work = Path(tmp)
        debs = fetch_debs(work)
        (args.out / "packages.txt").write_text("".join(f"{d.name}\n" for d in debs))
        rootfs = work / "rootfs"
        rootfs.mkdir()
        make_rootfs(debs, rootfs, args.pause, args.coredns, args.traefik)
        base_tar = work / "base.tar"
        run("tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(base_tar), ".")
        own_layers = image_layers(rootfs, args.standin)

        archive = Archive(args.out / "images.oci.tar")
        layer_type = "application/vnd.oci.image.layer.v1.tar"
        base = archive.blob_file(base_tar, layer_type)
        manifests = []
        listing = []
        for image in IMAGES:
            layers = [base]
            if image["layer"]:
                layers.append(archive.blob(own_layers[image["layer"]], layer_type))
            config = {"Env": [PATH_ENV], **image["config"]}
            config_blob = archive.blob(
                json.dumps({
                    "architecture": "amd64",
                    "os": "linux",
                    "config": config,
                    "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
                }).encode(),
                "application/vnd.oci.image.config.v1+json",
            )
            manifest = archive.blob(
                json.dumps({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_blob,
                    "layers": layers,
                }).encode(),
                "application/vnd.oci.image.manifest.v1+json",
            )
            for ref in image["refs"]:
                manifests.append({
                    **manifest,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                    },
                })
                listing.append({"ref": ref, "standsFor": image["stands_for"]})
        archive.close({"schemaVersion": 2, "manifests": manifests})
    (args.out / "images.json").write_text(json.dumps(listing, indent=2) + "\n")
    print(f"{len(listing)} image references, base layer {base['size'] >> 20} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
