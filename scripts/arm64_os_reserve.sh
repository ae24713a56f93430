#!/usr/bin/env bash
# arm64_os_reserve.sh: measure a board's "OS reserve", the RAM the operating system itself takes
# before any training runs, so that a board class's default training budget can be set to
# RAM - OS reserve.
#
# How: a minimal headless Debian bookworm arm64 system (the userland of a Raspberry Pi OS Lite
# style board: systemd, journald, udevd, dbus + logind, ifupdown + dhclient, sshd, cron,
# timesyncd, a getty on tty1; nothing else) is built once with mmdebstrap, turned into an ext4
# image (mke2fs -d, no mounts) and booted for real under full-system emulation
# (qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 4, TCG) with each RAM size asked for.
# A systemd unit in the guest waits until boot is finished (systemctl is-system-running --wait),
# lets the system settle, prints /proc/meminfo, free -b, each process's RSS/PSS, the kernel's
# "Memory:" line, then /proc/meminfo again after dropping caches, and powers off. The serial
# console is captured on the host and parsed.
#
#   sudo scripts/arm64_os_reserve.sh [RAM_MiB ...]      # default: 1024 2048 4096
#
# Prints one JSON object per RAM size to stdout (progress goes to stderr):
#   os_reserve_bytes         = RAM - MemAvailable      (what a training process can not count on)
#   os_reserve_nocache_bytes = RAM - (MemFree + Active(file) + Inactive(file))
#   used_bytes               = MemTotal - MemAvailable
#   userland_rss_bytes / userland_pss_bytes: sum over the guest's user processes (the probe's
#   own processes excluded; RSS counts shared libraries once per process, PSS splits them).
# Not modelled: firmware carve-outs of real boards (Raspberry Pi gpu_mem / CMA, Jetson
# carve-outs), camera and desktop services, swap/zram, and page-cache pressure from a workload.
#
# Cache: ${EDGEFLEET_ARM64_DIR:-$HOME/.cache/edgefleet/arm64}/os-reserve (image, kernel, initrd,
# one serial log per run); re-running reuses the image (delete rootfs.img to rebuild).
# Knobs (environment): EDGEFLEET_OS_RESERVE_SETTLE_S (60: seconds after boot before measuring),
# EDGEFLEET_OS_RESERVE_TIMEOUT_S (2400: per boot), EDGEFLEET_OS_RESERVE_SMP (4),
# EDGEFLEET_OS_RESERVE_CPU (cortex-a53), DEBIAN_MIRROR (http://deb.debian.org/debian),
# EDGEFLEET_OS_RESERVE_REUSE_LOGS=1 (parse a size's existing complete serial log instead of booting).
#
# Needs: root (the rootfs is built in a private user+mount namespace with identity-mapped ids, and
# an aarch64 binfmt_misc handler registered only inside it: Linux >= 6.7 has per-namespace
# binfmt_misc, so nothing is registered on the host), qemu-system-arm, mmdebstrap, e2fsprogs,
# util-linux, python3; qemu-user-static is used if installed, else its .deb is unpacked into the
# cache (apt-get download).
set -euo pipefail

die() { echo "arm64_os_reserve: $*" >&2; exit 1; }
log() { echo "[os-reserve $(date +%H:%M:%S)] $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing '$1': apt-get install -y $2"; }

need qemu-system-aarch64 qemu-system-arm
need mmdebstrap mmdebstrap
need mke2fs e2fsprogs
need unshare util-linux
need python3 python3
need timeout coreutils

BASE=${EDGEFLEET_ARM64_DIR:-$HOME/.cache/edgefleet/arm64}
DIR=$BASE/os-reserve
SETTLE_S=${EDGEFLEET_OS_RESERVE_SETTLE_S:-60}
TIMEOUT_S=${EDGEFLEET_OS_RESERVE_TIMEOUT_S:-2400}
SMP=${EDGEFLEET_OS_RESERVE_SMP:-4}
CPU=${EDGEFLEET_OS_RESERVE_CPU:-cortex-a53}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PACKAGES=systemd-sysv,udev,dbus,libpam-systemd,linux-image-arm64,initramfs-tools,zstd,kmod,e2fsprogs,openssh-server,ifupdown,isc-dhcp-client,iproute2,netbase,cron,systemd-timesyncd,procps

# The probe: runs in the guest once booted, prints memory figures behind @@ markers, powers off.
write_probe() {
    cat >"$1" <<'EOF'
#!/bin/sh
# Runs in the guest: waits for the end of boot, settles, prints memory figures with @@ markers.
settle=60
for w in $(cat /proc/cmdline); do case $w in edgefleet.settle=*) settle=${w#edgefleet.settle=};; esac; done
timeout 3000 systemctl is-system-running --wait >/dev/null 2>&1 || true
state=$(systemctl is-system-running 2>/dev/null || true)
sleep "$settle"
self_cg=$(cut -d: -f3 /proc/self/cgroup)
echo "@@EDGEFLEET-REPORT-BEGIN"
echo "@@state $state"
echo "@@settle_s $settle"
echo "@@uname $(uname -r) $(uname -v)"
echo "@@nproc $(nproc)"
echo "@@self_cgroup $self_cg"
echo "@@date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "@@min_free_kbytes $(cat /proc/sys/vm/min_free_kbytes)"
echo "@@thp $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
systemd-analyze time 2>/dev/null | sed 's/^/@@analyze /'
systemctl list-units --state=failed --no-legend --plain 2>/dev/null | sed 's/^/@@failed /'
systemctl list-units --type=service --state=running --no-legend --plain 2>/dev/null | sed 's/^/@@running /'
sed 's/^/@@meminfo /' /proc/meminfo
free -b | sed 's/^/@@free /'
for d in /proc/[0-9]*; do
    rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "$d/status" 2>/dev/null) || continue
    [ -n "$rss" ] || continue
    pss=$(sed -n 's/^Pss:[[:space:]]*\([0-9]*\) kB/\1/p' "$d/smaps_rollup" 2>/dev/null) || pss=0
    cg=$(cut -d: -f3 "$d/cgroup" 2>/dev/null) || cg=?
    echo "@@proc ${d#/proc/} $rss ${pss:-0} $cg $(cat "$d/comm" 2>/dev/null)"
done
ps -eo pid,ppid,rss,vsz,comm 2>/dev/null | sed 's/^/@@ps /'
dmesg 2>/dev/null | grep -iE 'Memory:|cma:|swiotlb|IO TLB|reserved mem|crashkernel|Freeing' | sed 's/^/@@dmesg /'
dmesg 2>/dev/null | sed -n '/Zone ranges:/,/Movable zone start/p' | sed 's/^/@@dmesg /'
grep -E '^Node|^ +(pages free|min|low|high|spanned|present|managed|protection)' /proc/zoneinfo | sed 's/^/@@zoneinfo /'
sync; echo 3 >/proc/sys/vm/drop_caches; sleep 2
sed 's/^/@@dropped /' /proc/meminfo
echo "@@EDGEFLEET-REPORT-END"
sleep 1
systemctl poweroff
EOF
    chmod 755 "$1"
}

# --------------------------------------------------------------------------------------------
# Guest files: a probe unit that reports memory on the serial console and powers off.
write_overlay() {
    local o=$1
    rm -rf "$o"
    mkdir -p "$o/etc/network" "$o/etc/systemd/system/multi-user.target.wants" "$o/usr/local/sbin"
    echo edgefleet-board >"$o/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tedgefleet-board\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$o/etc/hosts"
    printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' >"$o/etc/fstab"
    printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' \
        >"$o/etc/network/interfaces"
    # a real Pi has no serial getty by default (enable_uart=0); keep the console for the report
    ln -s /dev/null "$o/etc/systemd/system/serial-getty@ttyAMA0.service"
    ln -s /etc/systemd/system/edgefleet-report.service \
        "$o/etc/systemd/system/multi-user.target.wants/edgefleet-report.service"
    cat >"$o/etc/systemd/system/edgefleet-report.service" <<'EOF'
[Unit]
Description=edgefleet: report memory once booted, then power off
After=multi-user.target

[Service]
# Type=simple so that boot can finish while this waits for it
Type=simple
ExecStart=/usr/local/sbin/edgefleet-report
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyAMA0

[Install]
WantedBy=multi-user.target
EOF
    write_probe "$o/usr/local/sbin/edgefleet-report"

    # Installed before the kernel package: a small initramfs (the default MODULES=most runs
    # module by module under qemu-user for tens of minutes); the initramfs is freed after boot.
    local e=$o-early
    rm -rf "$e"
    mkdir -p "$e/etc/initramfs-tools/conf.d" "$e/etc/initramfs-tools/hooks"
    echo MODULES=list >"$e/etc/initramfs-tools/conf.d/edgefleet"
    cat >"$e/etc/initramfs-tools/hooks/edgefleet-virtio" <<'EOF'
#!/bin/sh
case "$1" in prereqs) exit 0;; esac
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_mmio virtio_blk virtio_net ext4 crc32c_generic
EOF
    chmod 755 "$e/etc/initramfs-tools/hooks/edgefleet-virtio"
}

# --------------------------------------------------------------------------------------------
# Build (once): rootfs with mmdebstrap in a private user namespace, then an ext4 image.
find_qemu_user() {
    if [ -x /usr/bin/qemu-aarch64-static ]; then echo /usr/bin/qemu-aarch64-static; return; fi
    local q=$DIR/qemu-user-static/usr/bin/qemu-aarch64-static
    if [ ! -x "$q" ]; then
        need apt-get apt
        log "qemu-aarch64-static not installed: unpacking qemu-user-static's .deb into $DIR"
        (cd "$DIR" && rm -f qemu-user-static_*.deb && apt-get download qemu-user-static >&2) \
            || die "apt-get download qemu-user-static failed (or: apt-get install -y qemu-user-static)"
        dpkg-deb -x "$DIR"/qemu-user-static_*.deb "$DIR/qemu-user-static"
    fi
    echo "$q"
}

build_image() {
    [ "$(id -u)" -eq 0 ] || die "building the image needs root (private user namespace with uids 0-65535); run with sudo"
    need dpkg-deb dpkg
    local qemu_user; qemu_user=$(find_qemu_user)
    write_overlay "$DIR/overlay"
    rm -rf "$DIR/rootfs" "$DIR/rootfs.img.tmp" "$DIR/binfmt"
    cat >"$DIR/build-inside.sh" <<EOF
#!/bin/bash
set -euo pipefail
# wait for the parent to write our uid/gid maps
for i in \$(seq 100); do [ "\$(awk '{print \$3}' /proc/self/uid_map)" = 65536 ] && break; sleep 0.1; done
[ "\$(awk '{print \$3}' /proc/self/uid_map)" = 65536 ] || { echo "uid map not set" >&2; exit 1; }
mount -t proc proc /proc
mkdir -p "$DIR/binfmt"
mount -t binfmt_misc binfmt_misc "$DIR/binfmt" || { echo "cannot mount a private binfmt_misc (needs Linux >= 6.7)" >&2; exit 1; }
printf '%s' ':qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$qemu_user:F' >"$DIR/binfmt/register"
mmdebstrap --mode=root --skip=check/qemu --arch=arm64 --variant=minbase \\
    --include=$PACKAGES \\
    --essential-hook='sync-in "$DIR/overlay-early" /' \\
    --customize-hook='sync-in "$DIR/overlay" /' \\
    --customize-hook='echo 0123456789abcdef0123456789abcdef >"\$1/etc/machine-id"' \\
    --customize-hook='chroot "\$1" dpkg-query -W -f="\\\${Package} \\\${Version}\\n" >"$DIR/packages.txt"' \\
    --customize-hook='cp "\$1"/boot/vmlinuz-* "$DIR/vmlinuz"; cp "\$1"/boot/initrd.img-* "$DIR/initrd.img"' \\
    --customize-hook='rm -rf "\$1/var/cache/apt/archives/"*.deb "\$1/var/lib/apt/lists/"*_Packages' \\
    bookworm "$DIR/rootfs" \\
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY_MIRROR bookworm-security main" >&2
kb=\$(du -sk "$DIR/rootfs" | cut -f1)
mb=\$(( kb / 1024 + 768 ))
rm -f "$DIR/rootfs.img.tmp"
truncate -s "\${mb}M" "$DIR/rootfs.img.tmp"
mke2fs -q -F -t ext4 -L root -d "$DIR/rootfs" "$DIR/rootfs.img.tmp"
rm -rf "$DIR/rootfs"
EOF
    chmod 755 "$DIR/build-inside.sh"
    log "building the Debian bookworm arm64 image (mmdebstrap under qemu-user: several minutes)"
    unshare --user --mount --pid --fork "$DIR/build-inside.sh" &
    local pid=$!
    sleep 0.3
    echo '0 0 65536' >"/proc/$pid/uid_map"
    echo '0 0 65536' >"/proc/$pid/gid_map"
    wait "$pid" || die "image build failed"
    mv "$DIR/rootfs.img.tmp" "$DIR/rootfs.img"
    log "image ready: $DIR/rootfs.img ($(du -h --apparent-size "$DIR/rootfs.img" | cut -f1), kernel $(file -b "$DIR/vmlinuz" 2>/dev/null | cut -c1-40 || true))"
}

# --------------------------------------------------------------------------------------------
# main is a function, so that bash has read all of it before it runs (editing this file during a
# run cannot change what the run does).
main() {
    if [ "$#" -eq 0 ]; then set -- 1024 2048 4096; fi
    local mb serial wall rc t0 QEMU_VERSION
    for mb in "$@"; do
        [[ $mb =~ ^[0-9]+$ ]] && [ "$mb" -ge 256 ] || die "RAM size must be a whole number of MiB >= 256, got '$mb'"
    done
    mkdir -p "$DIR"

    if [ ! -s "$DIR/rootfs.img" ] || [ ! -s "$DIR/vmlinuz" ] || [ ! -s "$DIR/initrd.img" ]; then
        build_image
    else
        log "reusing $DIR/rootfs.img"
    fi

    # --------------------------------------------------------------------------------------------
    # Boot once per RAM size; the image is opened with snapshot=on, so every boot starts identical.
    # The probe in the image is replaced by this script's current one (debugfs, no mount), so that
    # a cached image always runs the probe written here.
    need debugfs e2fsprogs
    write_probe "$DIR/edgefleet-report"
    debugfs -w -f - "$DIR/rootfs.img" >/dev/null 2>&1 <<EOF || die "debugfs could not update the probe in $DIR/rootfs.img"
rm /usr/local/sbin/edgefleet-report
write $DIR/edgefleet-report /usr/local/sbin/edgefleet-report
set_inode_field /usr/local/sbin/edgefleet-report mode 0100755
EOF
    debugfs -R 'cat /usr/local/sbin/edgefleet-report' "$DIR/rootfs.img" 2>/dev/null | cmp -s - "$DIR/edgefleet-report" \
        || die "the probe in $DIR/rootfs.img differs from the one written here"

    QEMU_VERSION=$(qemu-system-aarch64 --version | head -n1)
    for mb in "$@"; do
        serial=$DIR/serial-${mb}M.log
        if [ "${EDGEFLEET_OS_RESERVE_REUSE_LOGS:-0}" = 1 ] && grep -q '@@EDGEFLEET-REPORT-END' "$serial" 2>/dev/null; then
            log "-m $mb: parsing the existing $serial (EDGEFLEET_OS_RESERVE_REUSE_LOGS=1)"
            wall=$(cat "$serial.wall" 2>/dev/null || echo 0)
        else
            rm -f "$serial" "$serial.wall"
            log "booting with -m $mb (-smp $SMP, -cpu $CPU, TCG; settle ${SETTLE_S} s; allow several minutes) -> $serial"
            t0=$(date +%s)
            rc=0
            nice -n 19 timeout "$TIMEOUT_S" qemu-system-aarch64 -M virt -cpu "$CPU" -smp "$SMP" -m "$mb" \
                -kernel "$DIR/vmlinuz" -initrd "$DIR/initrd.img" \
                -append "root=/dev/vda rw console=ttyAMA0 net.ifnames=0 quiet loglevel=3 edgefleet.settle=$SETTLE_S" \
                -drive if=none,file="$DIR/rootfs.img",format=raw,id=hd,snapshot=on \
                -device virtio-blk-device,drive=hd \
                -netdev user,id=n -device virtio-net-device,netdev=n \
                -device virtio-rng-device \
                -display none -monitor none -serial file:"$serial" -no-reboot </dev/null >&2 || rc=$?
            wall=$(( $(date +%s) - t0 ))
            [ "$rc" -eq 0 ] || log "qemu exited with status $rc after ${wall} s (124 = timeout)"
            grep -q '@@EDGEFLEET-REPORT-END' "$serial" || die "no complete report in $serial (qemu status $rc, ${wall} s)"
            log "-m $mb done in ${wall} s"
            echo "$wall" >"$serial.wall"
        fi
        python3 - "$serial" "$mb" "$QEMU_VERSION" "$CPU" "$SMP" "$wall" <<'PY'
import datetime, json, os, sys

path, mb, qemu_version, cpu, smp, wall = sys.argv[1:7]
mem, dropped, procs = {}, {}, []
info = {"analyze": [], "failed": [], "running": [], "dmesg": [], "ps": [], "free": [], "zoneinfo": []}
in_report = False
with open(path, "rb") as f:
    for raw in f:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        i = line.find("@@")
        if i < 0:
            continue
        line = line[i + 2:]
        if line.startswith("EDGEFLEET-REPORT-BEGIN"):
            in_report = True
            continue
        if line.startswith("EDGEFLEET-REPORT-END"):
            break
        if not in_report:
            continue
        tag, _, rest = line.partition(" ")
        if tag in ("meminfo", "dropped"):
            key, _, val = rest.partition(":")
            parts = val.split()
            if parts:
                n = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
                (mem if tag == "meminfo" else dropped)[key.strip()] = n
        elif tag == "proc":
            p = rest.split(None, 4)
            if len(p) == 5:
                procs.append({"pid": int(p[0]), "rss_bytes": int(p[1]) * 1024,
                              "pss_bytes": int(p[2]) * 1024, "cgroup": p[3], "comm": p[4]})
        elif isinstance(info.get(tag), list):
            info[tag].append(rest.strip())
        else:
            info[tag] = rest.strip()

zones, zone = {}, None
for z in info["zoneinfo"]:
    w = z.replace(":", " ").replace(",", " ").split()
    if w[0] == "Node":
        zone = zones.setdefault(w[-1], {})
    elif zone is not None and w[0] in ("min", "low", "high", "spanned", "present", "managed") and len(w) == 2:
        zone.setdefault(w[0] + "_pages", int(w[1]))  # the zone's own line, not a per-cpu "high:"
ram = int(mb) * 1024 * 1024
self_cg = info.get("self_cgroup", "")
user = [p for p in procs if p["cgroup"] != self_cg]
probe = [p for p in procs if p["cgroup"] == self_cg]
file_lru = mem["Active(file)"] + mem["Inactive(file)"]
out = {
    "ram_mib": int(mb),
    "ram_bytes": ram,
    "mem_total_bytes": mem["MemTotal"],
    "mem_available_bytes": mem["MemAvailable"],
    "mem_free_bytes": mem["MemFree"],
    "os_reserve_bytes": ram - mem["MemAvailable"],
    "os_reserve_nocache_bytes": ram - (mem["MemFree"] + file_lru),
    "used_bytes": mem["MemTotal"] - mem["MemAvailable"],
    "kernel_withheld_bytes": ram - mem["MemTotal"],
    "userland_rss_bytes": sum(p["rss_bytes"] for p in user),
    "userland_pss_bytes": sum(p["pss_bytes"] for p in user),
    "userland_processes": len(user),
    "probe_rss_bytes": sum(p["rss_bytes"] for p in probe),
    "after_drop_caches": {
        "mem_free_bytes": dropped.get("MemFree"),
        "mem_available_bytes": dropped.get("MemAvailable"),
        "ram_minus_mem_free_bytes": ram - dropped["MemFree"] if "MemFree" in dropped else None,
    },
    "meminfo_bytes": {k: mem[k] for k in (
        "MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Active(file)",
        "Inactive(file)", "Shmem", "Slab", "SReclaimable", "SUnreclaim", "KernelStack",
        "PageTables", "AnonPages", "Mapped", "VmallocUsed", "Percpu", "CmaTotal", "CmaFree",
    ) if k in mem},
    "processes": sorted(({"comm": p["comm"], "rss_bytes": p["rss_bytes"], "pss_bytes": p["pss_bytes"]}
                         for p in user), key=lambda p: -p["rss_bytes"]),
    "kernel_memory_line": next((d for d in info["dmesg"] if "Memory:" in d), None),
    "swiotlb_line": next((d for d in info["dmesg"] if "IO TLB: mapped" in d), None),
    "min_free_kbytes": int(info["min_free_kbytes"]) if "min_free_kbytes" in info else None,
    "transparent_hugepage": info.get("thp"),
    "zones_pages": {k: v for k, v in zones.items() if v.get("present_pages")},
    "watermark_high_bytes": 4096 * sum(v.get("high_pages", 0) for v in zones.values()),
    "dmesg_memory": info["dmesg"],
    "system_state": info.get("state"),
    "failed_units": info["failed"],
    "running_services": [r.split()[0] for r in info["running"] if r],
    "boot_time": " ".join(info["analyze"]),
    "settle_s": int(info.get("settle_s", "0") or 0),
    "guest_kernel": info.get("uname"),
    "qemu_version": qemu_version,
    "machine": f"qemu-system-aarch64 -M virt -cpu {cpu} -smp {smp} -m {mb} (TCG)",
    "guest_nproc": int(info.get("nproc", "0") or 0),
    "wall_s": int(wall),
    "date": info.get("date") or datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
}
print(json.dumps(out))
PY
    done
}

main "$@"
exit
