"""A small signed Debian archive on a loopback HTTP server, for testing the hash chain offline.

Key made with gpg (ed25519) in a private GNUPGHOME; .debs built by dpkg-deb (an independent producer);
Packages/Release written like the real archive (xz + gz, SHA256, Acquire-By-Hash), InRelease clear-signed.
Files can be tampered with after signing to check that each link of the chain is enforced.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import lzma
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "testsuite"


def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    env = dict(os.environ, GNUPGHOME=str(home))
    return subprocess.run(
        ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=input,
        env=env,
        check=True,
        capture_output=True,
    ).stdout


def make_key(home: Path, uid: str) -> Path:
    """Create a signing key in *home*; return a binary keyring file holding its public key."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "1d")
    keyring = home / "keyring.gpg"
    keyring.write_bytes(gpg(home, "--export", uid))
    return keyring


def build_deb(root: Path, name: str, version: str, files: dict[str, bytes], compression: str = "xz") -> Path:
    tree = root / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <t@example.invalid>\n"
        f"Description: test package\n"
    )
    for path, data in files.items():
        dest = tree / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    deb = root / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


@dataclass
class FakeArchive:
    root: Path  # served directory (the mirror root)
    gnupg: Path
    keyring: Path
    debs: dict[str, Path] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def add_deb(self, name: str, version: str, files: dict[str, bytes], compression: str = "xz") -> Path:
        pool = self.root / "pool/main" / name[0] / name
        pool.mkdir(parents=True, exist_ok=True)
        deb = build_deb(self.root.parent / "build", name, version, files, compression)
        final = pool / deb.name
        deb.replace(final)
        self.debs[f"{name}={version}"] = final
        return final

    def publish(self, *, codename: str = SUITE, inrelease: bool = True, detached: bool = False) -> None:
        """Write Packages(.xz/.gz), Release and its signature(s) for every .deb added."""
        stanzas = []
        for deb in sorted(self.root.glob("pool/**/*.deb")):
            name, version, _ = deb.name.split("_", 2)
            data = deb.read_bytes()
            stanzas.append(
                f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                f"Filename: {deb.relative_to(self.root).as_posix()}\nSize: {len(data)}\n"
                f"SHA256: {hashlib.sha256(data).hexdigest()}\nDescription: test\n"
            )
        packages = "\n".join(stanzas).encode()
        dist = self.root / "dists" / codename
        binary = dist / "main/binary-amd64"
        binary.mkdir(parents=True, exist_ok=True)
        variants = {
            "main/binary-amd64/Packages": packages,
            "main/binary-amd64/Packages.xz": lzma.compress(packages),
            "main/binary-amd64/Packages.gz": gzip.compress(packages, mtime=0),
        }
        by_hash = binary / "by-hash/SHA256"
        by_hash.mkdir(parents=True, exist_ok=True)
        lines = []
        for rel, blob in variants.items():
            (dist / rel).write_bytes(blob)
            digest = hashlib.sha256(blob).hexdigest()
            (by_hash / digest).write_bytes(blob)
            lines.append(f" {digest} {len(blob):>10} {rel}")
        release = (
            f"Origin: Test\nLabel: Test\nSuite: {codename}\nCodename: {codename}\n"
            "Date: Sat, 21 Nov 2026 09:15:44 UTC\nAcquire-By-Hash: yes\nArchitectures: amd64\nComponents: main\n"
            "SHA256:\n" + "\n".join(lines) + "\n"
        ).encode()
        (dist / "Release").write_bytes(release)
        for stale in ("InRelease", "Release.gpg"):
            (dist / stale).unlink(missing_ok=True)
        if inrelease:
            (dist / "InRelease").write_bytes(gpg(self.gnupg, "--clearsign", "--digest-algo", "SHA256", input=release))
        if detached:
            (dist / "Release.gpg").write_bytes(gpg(self.gnupg, "--detach-sign", "--armor", input=release))

    def path(self, rel: str) -> Path:
        return self.root / rel


def serve(archive: FakeArchive) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    root = archive.root

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            archive.requests.append(self.path)
            return super().do_GET()

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    archive.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server, thread
