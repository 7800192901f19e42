"""Kernels under test: run the verifier (the same testbeds, programs, captures and checks) on another
Linux kernel, in a QEMU guest, and compare kernels side by side.

* `image`: a kernel to boot, from Debian's archive (``"6.1"``, ``"6.12"``: fetched with ``apt-get
  download`` and unpacked with ``dpkg-deb -x`` into ``.cache/kernels/`` of the repository, never
  installed on the host) or from a path (a ``vmlinuz``/``vmlinux`` and its modules folder);
  ``vmlinux`` extraction.
* `initramfs`: the guest's initramfs: busybox-static, the kernel's modules that mounting the root
  needs, and an ``/init`` that mounts the host's root read-only (9p) under a tmpfs overlay.
* `guest`: one guest run: the QEMU command line, the shared folders, the exit status passed back,
  a hard deadline; no state kept between runs.
* `inguest`: what runs first inside the guest (the timer-jitter probe), then the command.
* `compare`: the side-by-side report of ``make kernels``.
"""
