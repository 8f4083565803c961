#!/usr/bin/env python3
"""numa_vm.py: runs weft's NUMA checks on real multi-node kernels under qemu.

Owns the whole guest side of the 'numa-vm' test suite (tests/numa-vm/):
installing the host tools it needs, fetching Debian's kernel into the build
folder, building the static test program (numa_guest.c), packing the
initramfs, booting the guests and turning their output into pass/fail.

The machines here have one NUMA node, so only a guest kernel that was told
about several nodes (ACPI SRAT/SLIT from qemu) shows what libnuma, mbind and
move_pages really do.  Two guests run:
  2node  4 vCPUs: CPUs 0-1 on node 0, 2-3 on node 1, distance 20;
  3node  the same plus node 2 with CPUs 4-5 and no memory at all (the
         pitfall: numa_num_configured_nodes() != numa_max_node() + 1).
Each guest is told what to expect through its kernel command line (words
with '=' and no '.' become init's environment, so numa_guest reads them).

Exit codes (meson's convention): 0 all checks passed, 1 some failed (or a
guest crashed or hung), 77 skipped: qemu or its inputs cannot be had here;
the reason is on stderr.

Usage: numa_vm.py --source SRC --build BUILD --lib BUILD/runtime/libweft.a
       [--guests 2node,3node] [--cache DIR] [--timeout SECONDS] [--verbose]
"""

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77

# What each guest is told (qemu) and what numa_guest is told to expect.
# The CPU lists are per OS node; a node without memory gets no memdev.
GUESTS = {
    "2node": {
        "cpus": ["0-1", "2-3"],
        "memory": [True, True],
        "dist": [[10, 20], [20, 10]],
    },
    "3node": {
        "cpus": ["0-1", "2-3", "4-5"],
        "memory": [True, True, False],
        # Node 2 nearer to node 0 than to node 1, so the stealing order is
        # not just "by index".
        "dist": [[10, 20, 20], [20, 10, 30], [20, 30, 10]],
    },
}
MEM_PER_NODE_MB = 512

BEGIN = "WEFT-NUMA-BEGIN"
END_RE = re.compile(r"WEFT-NUMA-END rc=(\d+)")
RESULT_RE = re.compile(r"^(PASS|FAIL|SKIP) (\S+?):?(?: (.*))?$")

t0 = time.monotonic()
verbose = False


def log(msg):
    print("numa-vm [%5.1fs] %s" % (time.monotonic() - t0, msg), flush=True)


def skip(reason):
    print("numa-vm: SKIP: " + reason, file=sys.stderr, flush=True)
    print("numa-vm: SKIP: " + reason, flush=True)
    sys.exit(SKIP)


def run(cmd, **kw):
    if verbose:
        log("$ " + " ".join(cmd))
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


# ---- host tools -------------------------------------------------------------

def is_static_elf(path):
    """True for an ELF without a PT_INTERP header (no dynamic loader): a
    dynamic busybox would need the host's libc inside the initramfs."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return False
            phoff, = struct.unpack_from("<Q", hdr, 32)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        if struct.unpack_from("<I", ph, i * phentsize)[0] == 3:  # PT_INTERP
            return False
    return True


def apt_prefix():
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and run(["sudo", "-n", "true"]).returncode == 0:
        return ["sudo", "-n"]
    return None


apt_updated = False


def apt_update(prefix):
    global apt_updated
    if not apt_updated:
        log("apt-get update")
        run(prefix + ["apt-get", "update", "-qq"])
        apt_updated = True


def ensure_packages(need):
    """need: {package: test() -> bool}.  Installs what fails its test."""
    missing = [p for p, ok in need.items() if not ok()]
    if not missing:
        return
    prefix = apt_prefix()
    if prefix is None:
        skip("missing %s and no root or passwordless sudo to install them" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (0, 1):
        if attempt:
            apt_update(prefix)
        log("apt-get install " + " ".join(missing))
        r = run(prefix + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env)
        if r.returncode == 0:
            break
    still = [p for p, ok in need.items() if not ok()]
    if still:
        skip("could not install %s: %s" % (" ".join(still), r.stdout.strip()[-400:]))


def find_busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if is_static_elf(p):
            return p
    return None


def ensure_tools():
    ensure_packages({
        "qemu-system-x86": lambda: shutil.which("qemu-system-x86_64") is not None,
        "busybox-static": lambda: find_busybox() is not None,
        "xz-utils": lambda: shutil.which("xz") is not None,
        "libnuma-dev": lambda: os.path.exists("/usr/include/numa.h") and any(
            os.path.exists(d + "/libnuma.a") for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")),
    })
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "timeout"):
        if not shutil.which(tool):
            skip("%s not found (a Debian host is needed to fetch the kernel)" % tool)


# ---- kernel -------------------------------------------------------------------

def kernel_package():
    """The versioned package linux-image-amd64 depends on."""
    for attempt in (0, 1):
        if attempt:
            prefix = apt_prefix()
            if prefix is None:
                break
            apt_update(prefix)
        out = run(["apt-cache", "depends", "linux-image-amd64"]).stdout
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", out)
        if m:
            return m.group(1)
    skip("apt-cache knows no linux-image-amd64 dependency (no Debian archive reachable?)")


def vmlinux_from_bzimage(data):
    """The ELF vmlinux inside a bzImage: the XZ stream that decodes to an ELF.

    qemu boots an ELF vmlinux through PVH without running the kernel's own
    decompressor, which under TCG costs 3-4 s per boot."""
    try:
        import lzma
    except ImportError:  # a Python built without liblzma: use xz-utils
        lzma = None
    pos = 0
    magic = b"\xfd7zXZ\x00"
    while True:
        pos = data.find(magic, pos)
        if pos < 0:
            return None
        if lzma:
            try:
                out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[pos:])
            except lzma.LZMAError:
                out = b""
        else:
            out = subprocess.run(["xz", "-dc", "--single-stream"], input=data[pos:],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        if out[:4] == b"\x7fELF":
            return out
        pos += 1


def ensure_kernel(cache):
    vmlinux = os.path.join(cache, "vmlinux")
    if os.path.exists(vmlinux):
        return vmlinux
    pkg = kernel_package()
    log("fetching %s (first run only; cached as %s)" % (pkg, vmlinux))
    tmp = tempfile.mkdtemp(prefix="kernel-", dir=cache)
    try:
        r = run(["apt-get", "download", pkg], cwd=tmp)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if r.returncode != 0 or not debs:
            skip("apt-get download %s failed: %s" % (pkg, r.stdout.strip()[-400:]))
        root = os.path.join(tmp, "root")
        # dpkg-deb -x only unpacks: no maintainer scripts, nothing in /boot.
        r = run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), root])
        if r.returncode != 0:
            skip("dpkg-deb -x failed: " + r.stdout.strip()[-400:])
        boot = os.path.join(root, "boot")
        images = [f for f in os.listdir(boot) if f.startswith("vmlinuz-")] if os.path.isdir(boot) else []
        if not images:
            skip("no boot/vmlinuz-* in " + debs[0])
        with open(os.path.join(boot, images[0]), "rb") as f:
            elf = vmlinux_from_bzimage(f.read())
        if elf is None:
            skip("no XZ stream decoding to an ELF in " + images[0])
        with open(vmlinux + ".part", "wb") as f:
            f.write(elf)
        os.replace(vmlinux + ".part", vmlinux)
        with open(os.path.join(cache, "vmlinux.source"), "w") as f:
            f.write(debs[0] + "\n")
    finally:
        # The unpacked package (modules included) is hundreds of MB; only
        # the vmlinux is kept.
        shutil.rmtree(tmp, ignore_errors=True)
    return vmlinux


# ---- test program and initramfs -------------------------------------------------

def build_guest_program(src, build, lib, out):
    cc = os.environ.get("NUMA_VM_CC", "gcc")
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [cc, "-static", "-std=gnu11", "-D_GNU_SOURCE", "-O2", "-g0",
           "-Wall", "-Wextra", "-Werror",
           "-iquote", os.path.join(src, "runtime"),
           "-I", os.path.join(src, "include"), "-I", os.path.join(build, "include"),
           os.path.join(here, "numa_guest.c"), lib, "-lnuma", "-luring", "-lpthread", "-o", out]
    r = run(cmd)
    if r.returncode != 0:
        print(r.stdout, file=sys.stderr)
        print("numa-vm: FAIL: building numa_guest failed", flush=True)
        sys.exit(1)


INIT = """#!/bin/sh
# /init of the numa-vm guest: mount, run the checks, power off.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t tmpfs tmpfs /tmp
echo %s
/numa_guest
echo "WEFT-NUMA-END rc=$?"
/bin/busybox poweroff -f
""" % BEGIN


def cpio_entry(name, mode, data=b"", rdev=(0, 0), ino=[1000]):
    ino[0] += 1
    hdr = "070701" + "".join("%08X" % v for v in (
        ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0))
    out = hdr.encode() + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def make_initramfs(busybox, program, out):
    """newc cpio written directly (no cpio tool, no root needed for the
    /dev/console node the kernel opens for init's output).  Left
    uncompressed: the kernel unpacks it faster under TCG than it inflates."""
    with open(busybox, "rb") as f:
        bb = f.read()
    with open(program, "rb") as f:
        prog = f.read()
    parts = []
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        parts.append(cpio_entry(d, 0o040755))
    parts.append(cpio_entry("dev/console", 0o020600, rdev=(5, 1)))
    parts.append(cpio_entry("bin/busybox", 0o100755, bb))
    parts.append(cpio_entry("bin/sh", 0o120777, b"busybox"))
    parts.append(cpio_entry("init", 0o100755, INIT.encode()))
    parts.append(cpio_entry("numa_guest", 0o100755, prog))
    parts.append(cpio_entry("TRAILER!!!", 0))
    with open(out, "wb") as f:
        f.write(b"".join(parts))


# ---- guests ---------------------------------------------------------------------------

def qemu_command(vmlinux, initramfs, g):
    nnodes = len(g["cpus"])
    ncpus = max(int(c.split("-")[-1]) for c in g["cpus"]) + 1
    mem = [MEM_PER_NODE_MB if has else 0 for has in g["memory"]]
    cmd = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
           "-smp", str(ncpus), "-m", "%dM" % sum(mem)]
    for n in range(nnodes):
        if mem[n]:
            cmd += ["-object", "memory-backend-ram,id=m%d,size=%dM" % (n, mem[n]),
                    "-numa", "node,nodeid=%d,cpus=%s,memdev=m%d" % (n, g["cpus"][n], n)]
        else:
            # CPUs and no memdev: a memory-less node in the SRAT.
            cmd += ["-numa", "node,nodeid=%d,cpus=%s" % (n, g["cpus"][n])]
    for a in range(nnodes):
        for b in range(a + 1, nnodes):
            cmd += ["-numa", "dist,src=%d,dst=%d,val=%d" % (a, b, g["dist"][a][b])]
    expect = ("WEFT_EXPECT_NODES=%s WEFT_EXPECT_DIST=%s WEFT_EXPECT_MEM=%s" % (
        "|".join(g["cpus"]),
        "/".join(",".join(str(d) for d in row) for row in g["dist"]),
        ",".join("1" if m else "0" for m in g["memory"])))
    # numa_balancing=disable: the checks ask where the runtime put its
    # pages; the kernel moving them afterwards is not the runtime's doing.
    # tsc=reliable: clock_gettime without the HPET (1 us -> 100 ns).
    append = "console=ttyS0 quiet panic=-1 rdinit=/init tsc=reliable numa_balancing=disable " + expect
    cmd += ["-kernel", vmlinux, "-initrd", initramfs, "-append", append,
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-display", "none"]
    return cmd


def boot(cmd, timeout):
    """Runs one guest to power-off.  Returns (console, stderr, seconds);
    console is None when qemu did not run at all (nothing on the console
    and a failing exit: bad binary, no TCG, no memory...)."""
    start = time.monotonic()
    try:
        p = subprocess.run(["timeout", "-k", "5", str(timeout)] + cmd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return None, "cannot run qemu: %s" % e, 0.0
    took = time.monotonic() - start
    out = p.stdout.decode("utf-8", "replace").replace("\r", "")
    err = p.stderr.decode("utf-8", "replace").replace("\r", "")
    if p.returncode == 124:
        err += "\n(timed out after %d s)" % timeout
    elif p.returncode != 0 and not out.strip():
        return None, err.strip() or "qemu exited with %d" % p.returncode, took
    return out, err, took


def parse(name, out, err, took):
    """Returns (passed, failed, skipped) lists of 'guest/check detail'."""
    passed, failed, skipped = [], [], []
    seen_begin = False
    end = None
    for line in out.splitlines():
        line = line.rstrip()
        # The marker may share its line with the firmware's last words.
        if BEGIN in line:
            seen_begin = True
            continue
        m = END_RE.search(line)
        if m:
            end = int(m.group(1))
            continue
        if not seen_begin:
            continue
        r = RESULT_RE.match(line)
        if r:
            status, check, detail = r.group(1), r.group(2), r.group(3) or ""
            entry = "%s/%s %s" % (name, check, detail)
            {"PASS": passed, "FAIL": failed, "SKIP": skipped}[status].append(entry)
            print("%s %s" % (status, entry.rstrip()), flush=True)
        elif line.startswith("INFO "):
            print("  [%s] %s" % (name, line[5:]), flush=True)
    if end is None or not seen_begin:
        failed.append("%s/guest did not finish (%s)" % (name, "no begin marker" if not seen_begin else "no end marker"))
        print("FAIL %s" % failed[-1], flush=True)
        tail = "\n".join(out.strip().splitlines()[-25:])
        print("---- %s console tail ----\n%s\n---- qemu stderr ----\n%s" % (name, tail, err.strip()[-800:]),
              flush=True)
    elif end != 0 and not failed:
        failed.append("%s/exit numa_guest exited %d without a FAIL line" % (name, end))
        print("FAIL %s" % failed[-1], flush=True)
    log("%s: qemu start to power-off %.1f s" % (name, took))
    return passed, failed, skipped


def main():
    global verbose
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, help="weft source tree")
    ap.add_argument("--build", required=True, help="meson build tree")
    ap.add_argument("--lib", required=True, help="libweft.a")
    ap.add_argument("--cache", help="where the kernel and images go (default BUILD/tests/numa-vm)")
    ap.add_argument("--guests", default="2node,3node")
    ap.add_argument("--timeout", type=int, default=90, help="seconds per guest")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    verbose = a.verbose
    src, build, lib = (os.path.abspath(p) for p in (a.source, a.build, a.lib))
    cache = os.path.abspath(a.cache or os.path.join(build, "tests", "numa-vm"))
    os.makedirs(cache, exist_ok=True)
    if not os.path.exists(lib):
        print("numa-vm: FAIL: %s does not exist" % lib, flush=True)
        return 1
    guests = [g for g in a.guests.split(",") if g]
    for g in guests:
        if g not in GUESTS:
            ap.error("unknown guest %s (have %s)" % (g, ", ".join(GUESTS)))

    ensure_tools()
    vmlinux = ensure_kernel(cache)
    prog = os.path.join(cache, "numa_guest")
    build_guest_program(src, build, lib, prog)
    initramfs = os.path.join(cache, "initramfs.cpio")
    make_initramfs(find_busybox(), prog, initramfs)
    log("kernel, program and initramfs ready")

    passed, failed, skipped = [], [], []
    for name in guests:
        cmd = qemu_command(vmlinux, initramfs, GUESTS[name])
        if verbose:
            log("$ " + " ".join(cmd))
        out, err, took = boot(cmd, a.timeout)
        if out is None:
            skip("qemu could not run the %s guest: %s" % (name, err[-600:]))
        p, f, s = parse(name, out, err, took)
        passed += p
        failed += f
        skipped += s
    log("total %.1f s" % (time.monotonic() - t0))
    print("%d passed, %d failed, %d skipped" % (len(passed), len(failed), len(skipped)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
