"""A kernel to boot in a guest: from Debian's archive or from a path, and its uncompressed vmlinux.

Debian's kernels (`DEBIAN`) are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
into the repository's cache (``.cache/kernels/``, ignored by git), then ``depmod -b`` indexes their
modules there: nothing is installed on the host, /boot and /lib/modules stay as they are.

`Kernel.from_path` takes a kernel someone built or unpacked: a ``vmlinuz`` (bzImage) or ``vmlinux``
and its modules folder (``lib/modules/RELEASE``, which must hold ``modules.dep``: ``make
modules_install`` writes it, or run ``depmod -b ROOT RELEASE``).

Booting the uncompressed ``vmlinux`` through its PVH entry is about a second faster under emulation
than booting the compressed ``vmlinuz`` (docs/environment.md), so `vmlinux` extracts it.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEBIAN", "Kernel", "KernelError", "debian_kernel", "extract_vmlinux", "resolve"]

#: The kernels `make kernels` compares, by short name: the Debian package names that provide each
#: (the generic flavour: the cloud flavour has no 9p). The newest one apt knows is taken.
DEBIAN = {
    "6.1": r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    "6.12": r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
}

#: Where the unpacked kernels are kept, under the repository (git ignores .cache/).
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "kernels"


class KernelError(Exception):
    """A kernel that cannot be used: one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class Kernel:
    """One kernel: `image` (vmlinuz or vmlinux), its `modules` folder (``.../lib/modules/RELEASE``),
    its build `config` if known (CONFIG_HZ sets the timer model), and where it came from."""

    name: str
    release: str
    image: Path
    modules: Path
    config: Path | None = None
    package: str | None = None  # "linux-image-6.1.0-57-amd64 6.1.192-3" for a Debian kernel

    @classmethod
    def from_path(cls, image: str | Path, modules: str | Path | None = None) -> "Kernel":
        """A kernel from a file: `image` is a bzImage (vmlinuz) or an ELF vmlinux; `modules` its
        ``lib/modules/RELEASE`` folder, by default looked for beside it (``../lib/modules/RELEASE``,
        as a kernel package unpacks) and then in ``/lib/modules/RELEASE`` (``make modules_install``)."""
        image = Path(image)
        if not image.is_file():
            raise KernelError(f"{image}: no such kernel image (give a vmlinuz or vmlinux file)")
        head = image.read_bytes()[:0x1000]
        release = bzimage_release(image) if head[0x202:0x206] == b"HdrS" else None
        if release is None and not head.startswith(b"\x7fELF"):
            raise KernelError(f"{image}: neither a bzImage (vmlinuz) nor an ELF vmlinux")
        if modules is None:
            if release is None:
                raise KernelError(f"{image}: a vmlinux does not say its release: give its modules folder too "
                                  f"(--verifier-kernel-modules DIR)")
            candidates = [image.resolve().parent.parent / "lib" / "modules" / release, Path("/lib/modules") / release]
            modules = next((c for c in candidates if c.is_dir()), None)
            if modules is None:
                raise KernelError(f"{image}: no modules folder for release {release} in "
                                  f"{' or '.join(map(str, candidates))}: give it with --verifier-kernel-modules DIR")
        modules = Path(modules)
        if not (modules / "modules.dep").is_file():
            raise KernelError(f"{modules}: no modules.dep (not a modules folder, or not indexed: run "
                              f"'depmod -b ROOT RELEASE' where ROOT/lib/modules/RELEASE is this folder)")
        release = release or modules.name
        config = next((c for c in (image.parent / f"config-{release}", image.parent / ".config",
                                   modules / "build" / ".config") if c.is_file()), None)
        return cls(str(image), release, image, modules, config)

    def hz(self) -> int | None:
        """CONFIG_HZ of this kernel's build config; None when the config is unknown."""
        if self.config is None:
            return None
        m = re.search(r"^CONFIG_HZ=(\d+)$", self.config.read_text(errors="replace"), re.M)
        return int(m[1]) if m else None


def bzimage_release(image: Path) -> str | None:
    """The release (``uname -r``) a bzImage names in its header's kernel_version string."""
    data = image.read_bytes()
    if data[0x202:0x206] != b"HdrS":
        return None
    (offset,) = struct.unpack_from("<H", data, 0x20E)  # kernel_version: offset of the string - 0x200
    if not offset:
        return None
    text = data[offset + 0x200: offset + 0x200 + 256].split(b"\0", 1)[0].decode(errors="replace")
    return text.split(" ", 1)[0] or None


def extract_vmlinux(image: Path, dest: Path) -> Path:
    """Write the uncompressed ELF ``vmlinux`` inside the bzImage `image` to `dest`.

    Like the kernel's scripts/extract-vmlinux, but instead of scanning for a compressor's magic
    bytes it reads where the payload is from the boot protocol header (2.08+: ``setup_sects`` at
    0x1f1, ``payload_offset``/``payload_length`` at 0x248, Documentation/arch/x86/boot.rst). The
    payload ends in its uncompressed size (the kernel's ``*_with_size`` compressors), which the
    result is checked against. gzip, xz and lzma are decompressed in Python; zstd (Python 3.11 has
    no zstd module) by the ``zstd`` command, as extract-vmlinux does. An ELF `image` is copied.
    """
    data = image.read_bytes()
    if data.startswith(b"\x7fELF"):
        shutil.copyfile(image, dest)
        return dest
    if data[0x202:0x206] != b"HdrS":
        raise KernelError(f"{image}: not a bzImage (no HdrS boot header)")
    (version,) = struct.unpack_from("<H", data, 0x206)
    if version < 0x208:
        raise KernelError(f"{image}: boot protocol {version >> 8}.{version & 0xff} has no payload fields "
                          f"(2.08+ needed): give an uncompressed vmlinux")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[(setup_sects + 1) * 512 + offset:][:length]
    body, (size,) = payload[:-4], struct.unpack("<I", payload[-4:])
    if payload.startswith(b"\x1f\x8b"):
        out = zlib.decompressobj(wbits=31).decompress(body)
    elif payload.startswith(b"\xfd7zXZ\x00"):
        out = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(body)
    elif payload.startswith(b"\x5d\x00\x00"):
        out = lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(body)
    elif payload.startswith(b"\x28\xb5\x2f\xfd"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise KernelError(f"{image}: its payload is zstd-compressed and the zstd command is missing "
                              f"(install the zstd package; sudo make setup does)")
        res = subprocess.run([zstd, "-dcq"], input=body, capture_output=True)
        if res.returncode != 0:
            raise KernelError(f"{image}: zstd could not decompress the payload: {res.stderr.decode().strip()}")
        out = res.stdout
    else:
        raise KernelError(f"{image}: payload compressed with a format not read here "
                          f"(magic {payload[:4].hex()}): give an uncompressed vmlinux")
    if not out.startswith(b"\x7fELF") or len(out) != size:
        raise KernelError(f"{image}: the decompressed payload is not the ELF vmlinux its header announces "
                          f"({len(out)} bytes, {size} expected)")
    dest.write_bytes(out)
    return dest


def _apt(*args: str) -> str:
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise KernelError(f"{args[0]} is missing: Debian kernels are fetched with apt (on Debian or Ubuntu)") from None
    if res.returncode != 0:
        raise KernelError(f"{' '.join(args[:2])} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    return res.stdout


def newest_package(pattern: str) -> str | None:
    """The newest package apt knows whose name matches `pattern` (by the numbers in the name)."""
    names = [line.split(" - ", 1)[0] for line in _apt("apt-cache", "search", "--names-only", pattern).splitlines()]
    names = [n for n in names if re.match(pattern, n)]
    return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)], default=None)


def debian_kernel(name: str, cache: Path = CACHE, progress=print) -> Kernel:
    """Debian's kernel `name` (a key of `DEBIAN`), from the cache, or fetched and unpacked into it."""
    if name not in DEBIAN:
        raise KernelError(f"unknown kernel {name!r}: use one of {', '.join(DEBIAN)} or the path of a vmlinuz/vmlinux")
    package = newest_package(DEBIAN[name])
    if package is None:
        raise KernelError(f"apt knows no package matching {DEBIAN[name]}: run 'apt-get update' (Debian bookworm's "
                          f"archive has 6.1 and 6.12)")
    version = re.search(r"^Version: (\S+)", _apt("apt-cache", "show", "--no-all-versions", package), re.M)[1]
    root = cache / f"{package}_{version.replace(':', '%')}"
    if not (root / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        progress(f"kernels: fetching {package} {version} into {cache} (once)")
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
            subprocess.run(["apt-get", "download", "-q", f"{package}={version}"], cwd=tmp, check=True,
                           capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            tree = Path(tmp) / "tree"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
            deb.unlink()
            release = next((tree / "lib" / "modules").iterdir()).name
            subprocess.run(["depmod", "-b", str(tree), release], check=True)
            vmlinuz = tree / "boot" / f"vmlinuz-{release}"
            extract_vmlinux(vmlinuz, tree / "boot" / f"vmlinux-{release}")
            (tree / ".complete").write_text(f"{package} {version}\n")
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tree, root)
    release = next((root / "lib" / "modules").iterdir()).name
    boot = root / "boot"
    return Kernel(name, release, boot / f"vmlinux-{release}", root / "lib" / "modules" / release,
                  boot / f"config-{release}", f"{package} {version}")


def resolve(spec: str, modules: str | None = None, progress=print) -> Kernel:
    """A kernel by the user's word: a short name of `DEBIAN`, or the path of a vmlinuz/vmlinux."""
    if spec in DEBIAN:
        return debian_kernel(spec, progress=progress)
    if "/" in spec or Path(spec).exists():
        return Kernel.from_path(spec, modules)
    raise KernelError(f"unknown kernel {spec!r}: use one of {', '.join(DEBIAN)} or the path of a vmlinuz/vmlinux "
                      f"file")
