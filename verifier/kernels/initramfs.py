"""The guest's initramfs: busybox-static, the kernel's modules that mounting the root needs, an /init.

The archive is the kernel's "newc" cpio format (Documentation/driver-api/early-userspace/
buffer-format.rst), written here in a few lines rather than by running cpio, so that its contents
are exactly the listed members (uid 0, mtime 0: the same inputs give the same bytes), and read back
by `read_newc` in the tests.

The /init script (`init_script`) is written for one run: it loads the modules, mounts the host's
root read-only over 9p with a tmpfs overlay on top (writes stay in the guest's memory), gives the
kernel's own modules folder its usual place (/lib/modules/RELEASE, for module autoload by the
host's kmod `modprobe`), mounts the writable shares at their host paths, runs the job chrooted into
that root, writes its exit status to the status file (on a share), and powers off.
"""

from __future__ import annotations

import gzip
import lzma
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .image import KernelError

__all__ = ["BOOT_MODULES", "Share", "build", "init_script", "module_order", "read_newc", "write_newc"]

#: What /init needs before the job can start: virtio-pci for the shares, 9p over virtio, overlayfs.
#: Their dependencies come from the kernel's modules.dep; the ones built in (modules.builtin) are skipped.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
#: The host's busybox-static (Debian's busybox-static package).
BUSYBOX = "/bin/busybox"
MOUNT_9P = "trans=virtio,version=9p2000.L,msize=512000"


@dataclass(frozen=True)
class Share:
    """A host folder the guest mounts over 9p at the same path (its QEMU `tag`), writable or not."""

    tag: str
    path: Path
    writable: bool = True


def modname(path: str) -> str:
    """The module name of a modules.dep path: kernel/fs/9p/9p.ko.xz -> 9p (dashes become underscores)."""
    name = path.rsplit("/", 1)[-1]
    return name.split(".ko", 1)[0].replace("-", "_")


def module_order(modules_dir: Path, wanted=BOOT_MODULES) -> list[str]:
    """The modules.dep paths to insmod, dependencies first, for the modules `wanted` (built-in ones,
    listed in modules.builtin, need nothing)."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" in line:
            path, rest = line.split(":", 1)
            deps[modname(path)] = (path, [modname(d) for d in rest.split()])
    builtin_file = modules_dir / "modules.builtin"
    builtin = {modname(p) for p in builtin_file.read_text().split()} if builtin_file.exists() else set()
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in deps:
            raise KernelError(f"{modules_dir}: module {name} is neither built in nor in modules.dep "
                              f"(a guest needs {', '.join(BOOT_MODULES)})")
        path, needs = deps[name]
        for dep in needs:
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def initramfs_path(module: str) -> str:
    """Where a modules.dep path goes in the initramfs, decompressed: /lib/modules/kernel/fs/9p/9p.ko."""
    return "/lib/modules/" + module.split(".ko", 1)[0] + ".ko"


def module_bytes(path: Path) -> bytes:
    """A module file's ELF contents, decompressed (.ko.xz, .ko.gz, .ko.zst) so busybox insmod loads it."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise KernelError(f"{path}: a zstd-compressed module and no zstd command (sudo make setup installs it)")
        return subprocess.run([zstd, "-dcq", str(path)], capture_output=True, check=True).stdout
    return data


def init_script(*, release: str, modules: list[str], modules_dir: Path, shares: list[Share], status: Path,
                argv: list[str], cwd: Path, env: dict[str, str], config: bool) -> str:
    """The /init of one run. `modules`: the modules.dep paths to insmod, in order; `modules_dir`: the host
    path of the kernel's modules folder (seen through the read-only root); `shares`: mounted at their
    host paths; `status`: the host path (on a writable share) where the job's exit status is written;
    `argv`, `cwd`, `env`: the job, run chrooted into the host's root. `config`: /boot-config holds the
    kernel's build config, copied to /boot/config-RELEASE for the timer model (tests/kernel.py)."""
    q = shlex.quote
    lines = [
        "#!/bin/busybox sh",
        "# verifier guest init, written for one run by verifier/kernels/initramfs.py",
        "/bin/busybox --install -s /bin",
        "export PATH=/bin",
        'fail() { echo "verifier-guest: $*"; echo 125 > ' + q(f"/newroot{status}") + "; sync; poweroff -f; }",
        "mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev",
    ]
    lines += [f"insmod {q(initramfs_path(m))} || fail 'cannot load {m}'" for m in modules]
    lines += [
        "mkdir -p /lower /rw /newroot",
        f"mount -t 9p -o {MOUNT_9P},ro,cache=loose hostroot /lower || fail 'cannot mount the host root (9p)'",
        "mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work",
        "mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot"
        " || fail 'cannot mount the overlay'",
        "mount -t proc proc /newroot/proc && mount -t sysfs sysfs /newroot/sys && mount --bind /dev /newroot/dev",
        "mkdir -p /newroot/dev/pts /newroot/dev/shm && mount -t devpts devpts /newroot/dev/pts"
        " && mount -t tmpfs tmpfs /newroot/dev/shm",
        "mount -t tmpfs -o mode=0755 tmpfs /newroot/run",
    ]
    target = f"/lib/modules/{release}"
    if str(modules_dir) != target:
        lines.append(f"mkdir -p {q('/newroot' + target)} && mount --bind {q(f'/newroot{modules_dir}')} "
                     f"{q('/newroot' + target)}"
                     " || fail 'cannot mount the modules folder'")
    if config:
        lines.append(f"mkdir -p /newroot/boot && cp /boot-config /newroot/boot/config-{q(release)}")
    for share in shares:
        mode = "rw" if share.writable else "ro"
        where = q(f"/newroot{share.path}")
        lines.append(f"mkdir -p {where} && mount -t 9p -o {MOUNT_9P},{mode} {share.tag} {where}"
                     f" || fail {q(f'cannot mount {share.path}')}")
    # The kernel runs its module loader (kernel.modprobe) from the initramfs root: hand it to the
    # host's kmod modprobe inside the new root, which reads /lib/modules/RELEASE there.
    lines.append("echo /bin/modprobe-in-root > /proc/sys/kernel/modprobe")
    lines.append("echo verifier-guest: up")
    envs = " ".join(q(f"{k}={v}") for k, v in env.items())
    job = f"cd {q(str(cwd))} && exec {' '.join(q(a) for a in argv)}"
    lines.append(f"chroot /newroot /usr/bin/env -i {envs} /bin/sh -c {q(job)} </dev/null")
    lines.append(f"echo $? > {q(f'/newroot{status}')}")
    lines.append(f"umount {q(f'/newroot{status.parent}')} 2>/dev/null; sync; poweroff -f")
    return "\n".join(lines) + "\n"


MODPROBE = '#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n'


def write_newc(members: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of `members` (name, mode with file type, data; a symlink's data is its
    target), uid/gid 0, mtime 0, ending with the TRAILER!!! entry."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        rdev = (5, 1) if mode & 0o170000 == 0o020000 else (0, 0)  # a character device: /dev/console
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(raw)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """The members of a newc archive: name -> (mode, data)."""
    members, pos = {}, 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"not a newc header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return members
        members[name] = (mode, data[pos:pos + size])
        pos += size + (-size % 4)


def build(dest: Path, *, modules_dir: Path, init: str, modules: list[str], config: Path | None = None,
          busybox: str = BUSYBOX) -> Path:
    """Write the initramfs of one run to `dest`: /bin/busybox, /init, the modules (decompressed, in
    /lib/modules/ under their modules.dep paths), /bin/modprobe-in-root, /boot-config, /dev/console."""
    if not Path(busybox).is_file():
        raise KernelError(f"{busybox} is missing: install busybox-static (sudo make setup does)")
    dirs = {"bin", "dev", "proc", "sys", "lib", "lib/modules"}
    for m in modules:
        parts = initramfs_path(m)[1:].split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    members = [(d, 0o040755, b"") for d in sorted(dirs)]
    members += [("dev/console", 0o020600, b""),
                ("bin/busybox", 0o100755, Path(busybox).read_bytes()),
                ("bin/modprobe-in-root", 0o100755, MODPROBE.encode()),
                ("init", 0o100755, init.encode())]
    members += [(initramfs_path(m)[1:], 0o100644, module_bytes(modules_dir / m)) for m in modules]
    if config is not None:
        members.append(("boot-config", 0o100644, config.read_bytes()))
    dest.write_bytes(write_newc(members))
    return dest
