#!/usr/bin/env python3
"""Writes a pause image as a Docker image archive (what `ctr images import` reads), with no registry.

Usage: pause_image.py OUT.tar NAME BUSYBOX

The image holds one file, BUSYBOX (a static busybox) as /bin/busybox, and sleeps forever.
"""
import hashlib
import io
import json
import platform
import sys
import tarfile


def layer(busybox):
    """An uncompressed layer tar with /bin/busybox."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "dev", "etc", "proc", "sys"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        with open(busybox, "rb") as source:
            data = source.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main(out, name, busybox):
    blob = layer(busybox)
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    architecture = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps({
        "architecture": architecture, "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out, mode="w") as tar:
        for path, data in (("layer.tar", blob), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main(*sys.argv[1:4])
