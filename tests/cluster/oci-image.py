#!/usr/bin/env python3
"""Writes a one-layer OCI image-layout tarball that `ctr images import` loads.

    oci-image.py OUT.tar NAME [--entrypoint ARG...] [--cmd ARG...] [--env K=V...]
                 [--file SRC:DEST[:MODE]...] [--link DEST:TARGET...] [--dir DEST[:MODE]...]

NAME (e.g. wasmover.test/busybox:1) goes into index.json as the
io.containerd.image.name annotation. The layer is an uncompressed tar with
every entry owned by 0:0 and dated 1970, in sorted order, so the same inputs
give the same bytes (and image digest). Parent directories are added as needed.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def entries(args):
    """(path, TarInfo, data or None) for everything the layer holds, parents included."""
    items = {}

    def add_dir(path, mode=0o755):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in items:
                ti = tarfile.TarInfo(p)
                ti.type, ti.mode = tarfile.DIRTYPE, (mode if i == len(parts) else 0o755)
                items[p] = (ti, None)

    for spec in args.dir:
        dest, _, mode = spec.partition(":")
        add_dir(dest, int(mode, 8) if mode else 0o755)
    for spec in args.file:
        src, dest, *mode = spec.split(":")
        with open(src, "rb") as f:
            data = f.read()
        dest = dest.strip("/")
        if "/" in dest:
            add_dir(os.path.dirname(dest))
        ti = tarfile.TarInfo(dest)
        ti.size = len(data)
        ti.mode = int(mode[0], 8) if mode else 0o755
        items[dest] = (ti, data)
    for spec in args.link:
        dest, target = spec.split(":", 1)
        dest = dest.strip("/")
        if "/" in dest:
            add_dir(os.path.dirname(dest))
        ti = tarfile.TarInfo(dest)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        items[dest] = (ti, None)
    for ti, _ in items.values():
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = 0
    return [items[k] for k in sorted(items)]


def layer_tar(args):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for ti, data in entries(args):
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def blob(out, data, media_type):
    """Adds data under blobs/sha256/ and returns its OCI descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    ti = tarfile.TarInfo(f"blobs/sha256/{digest}")
    ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
    out.addfile(ti, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--entrypoint", nargs="*", default=None)
    ap.add_argument("--cmd", nargs="*", default=None)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--link", action="append", default=[])
    ap.add_argument("--dir", action="append", default=[])
    args = ap.parse_args()

    layer = layer_tar(args)
    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Env": args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    if args.entrypoint is not None:
        config["config"]["Entrypoint"] = args.entrypoint
    if args.cmd is not None:
        config["config"]["Cmd"] = args.cmd

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as out:
        layer_desc = blob(out, layer, "application/vnd.oci.image.layer.v1.tar")
        config_desc = blob(out, dumps(config), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = blob(out, dumps(manifest), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {
            "io.containerd.image.name": args.name,
            "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1],
        }
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [manifest_desc]}
        for name, data in (("oci-layout", dumps({"imageLayoutVersion": "1.0.0"})), ("index.json", dumps(index))):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            out.addfile(ti, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(f"{args.name} {manifest_desc['digest']}", file=sys.stderr)


if __name__ == "__main__":
    main()
