"""`make image-test`: boot the built appliance image under qemu-system-aarch64 and check it.

The image's own kernel and initrd (from its FAT partition) boot in `-M virt` (TCG, 2 vCPUs) with
the image as a virtio disk grown to a bigger "card", user-mode networking (`restrict=on`: the
guest reaches nothing) with SSH and HTTP forwarded to 127.0.0.1 only. The Pi firmware stage
(start4.elf reading config.txt) cannot run here, so config.txt/cmdline.txt are checked as files.

1. a card with a bad settings file: the console and the journal say so, SSH takes no password
2. the settings fixed (simulated sensor): first boot grows the root, makes host keys, applies
   the settings, starts the service; SSH with the settings' key, /healthz 200, 800 rows/s on
   disk, the unit's sandbox as `systemctl show` reports it, the card-saving settings
3. a reboot: no first-boot step runs again (marks, host keys, the unit skipped), data kept
4. with --drill (`make image-drill`): the deploy playbook (a test inventory naming this VM)
   upgrades the Pi to a second release, rollback.yml goes back; the data stays throughout.
   It is not in `make image-test` (nor CI): 20 more minutes under TCG, and the same playbooks
   are drilled on the Molecule test hosts in every CI run.

Exit status 0 when every check passed; each failed check is named. Figures go to report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SECTOR = 512
HOSTNAME = "wilo-vmtest"
TOKEN = "vmtest-token-0123456789abcdef"  # noqa: S105 - the test card's, by design
RATE = 800.0
# The unit's sandbox as systemd reports it (templates/etc/systemd/system/wilo-backend.service.j2).
SANDBOX = {
    "User": "wilo",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "DevicePolicy": "closed",
    "ReadWritePaths": "/var/lib/wilo-backend",
    "CapabilityBoundingSet": "cap_sys_nice",
    "AmbientCapabilities": "cap_sys_nice",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
}
READINGS = "/var/lib/wilo-backend/readings"
MARKS = ("root-grown", "ssh-host-keys", "settings-applied")
# The Molecule scenarios' reader of the stored rows (by their own timestamps), run on the VM.
GAP_SCRIPT = REPO / "molecule/shared/files/readings_gap.py"
REMOTE_GAP_SCRIPT = "/run/wilo-vmtest-readings-gap.py"
# As the arm64 Molecule scenario: 800 +- 1 rows per second over 60 s, no hole above 0.1 s.
RATE_WINDOW_S = 60.0
RATE_TOLERANCE = 1.0
MAX_GAP_S = 0.1
# /metrics counters that tell where rows went missing: never sampled (the sampler late under
# emulation: FIFO overflow, missed deadlines), lost in the hand-off, or dropped by the store
LOSS_METRICS = (
    "wilo_samples_total",
    "wilo_samples_lost_total",
    "wilo_storage_rows_total",
    "wilo_storage_rows_dropped_total",
)


class CheckError(AssertionError):
    """One named check of the image did not hold."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckError(what)
    print(f"vmtest: ok: {what}", flush=True)


def soft_check(report: dict[str, Any], ok: bool, what: str) -> None:
    """A check whose failure is noted in report["failed"] while the run goes on."""
    try:
        check(ok, what)
    except CheckError:
        report.setdefault("failed", []).append(what)
        print(f"vmtest: FAILED (going on): {what}", flush=True)


def log(message: str) -> None:
    print(f"vmtest: {message}", flush=True)


def run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    # stdin from /dev/null: ansible-playbook refuses a non-blocking stdin ("requires blocking
    # IO"), which the caller's terminal may be left in
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)


def probe(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`argv` (an ssh to a VM that may still be booting), output kept, killed after `timeout` s
    (subprocess.TimeoutExpired). Its stdin is /dev/null: ssh makes its stdin non-blocking and,
    killed by the timeout, cannot undo it; inherited, that stdin is the file every later CI stage
    shares, and ansible-playbook then refuses to run ("requires blocking IO")."""
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Disk:
    """The raw image and its FAT partition, read and written with mtools (no mount)."""

    path: Path
    boot_offset: int = 0

    def __post_init__(self) -> None:
        table = json.loads(run("sfdisk", "--json", self.path, capture_output=True).stdout)
        parts = table["partitiontable"]["partitions"]
        check(
            table["partitiontable"]["label"] == "dos" and [p["type"] for p in parts] == ["c", "83"],
            "MBR with a FAT32 (LBA) boot partition and a Linux root",
        )
        self.boot_offset = int(parts[0]["start"]) * SECTOR

    def _fat(self) -> str:
        return f"{self.path}@@{self.boot_offset}"

    def read(self, name: str) -> bytes:
        return subprocess.run(
            ["mcopy", "-n", "-i", self._fat(), f"::{name}", "-"], check=True, capture_output=True
        ).stdout

    def names(self) -> list[str]:
        out = run("mdir", "-b", "-i", self._fat(), "::", capture_output=True).stdout
        return [line.removeprefix("::/").strip() for line in out.splitlines() if line.strip()]

    def write(self, name: str, data: bytes, scratch: Path) -> None:
        scratch.write_bytes(data)
        run("mcopy", "-o", "-i", self._fat(), scratch, f"::{name}")


@dataclass
class VM:
    """qemu-system-aarch64 on the image; SSH and HTTP forwarded to 127.0.0.1 only."""

    work: Path
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str
    key: Path
    ssh_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    console: Path = Path()
    started: float = 0.0

    def start(self, console_name: str) -> None:
        self.console = self.work / console_name
        argv = [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
            "-display", "none", "-monitor", f"unix:{self.work / 'monitor.sock'},server,nowait",
            "-serial", f"file:{self.console}",
            "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.cmdline,
            "-drive", f"file={self.disk},format=raw,if=none,id=card,cache=unsafe",
            "-device", "virtio-blk-pci,drive=card",
            "-netdev",
            f"user,id=lan,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
            f"hostfwd=tcp:127.0.0.1:{self.http_port}-:8765",
            "-device", "virtio-net-pci,netdev=lan",
        ]  # fmt: skip
        log(f"booting: {shlex.join(argv)}")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def ssh_argv(self, *extra: str) -> list[str]:
        return [
            "ssh", "-p", str(self.ssh_port), "-i", str(self.key),
            "-o", f"UserKnownHostsFile={self.work / 'known_hosts'}",
            # accept-new: the first boot's host key is recorded, any other key later fails
            "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=5",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *extra, "root@127.0.0.1",
        ]  # fmt: skip

    def shell(
        self, command: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`command` on the VM, its exit status kept; stdin fed from `stdin`."""
        # 255 is ssh's own failure (a connection timed out on a loaded host), not the command's:
        # tried again, so a slow connect is not reported as the command's empty answer
        for _ in range(3):
            proc = subprocess.run(
                [*self.ssh_argv(), command],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
            if proc.returncode != 255:
                break
            time.sleep(5)
        return proc

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> str:
        proc = self.shell(command, timeout=timeout)
        if check and proc.returncode != 0:
            raise CheckError(f"on the VM `{command}` exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, what: str, probe: Any, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise CheckError(f"qemu exited while waiting for {what}")
            with contextlib.suppress(OSError, subprocess.SubprocessError, CheckError):
                if probe():
                    return self.elapsed()
            time.sleep(2)
        tail = self.console.read_text(errors="replace")[-3000:] if self.console.exists() else ""
        raise CheckError(f"no {what} within {timeout:.0f} s; console ends:\n{tail}")

    # Liveness bounds, not timing checks: TCG on a loaded 2-core machine boots in minutes.
    def wait_ssh(self, timeout: float = 1800) -> float:
        return self.wait_for("SSH login", lambda: self.ssh("true", timeout=20) == "", timeout)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return int(err.code), {}

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def wait_healthz(self, timeout: float = 1800) -> float:
        return self.wait_for("/healthz 200", lambda: self.healthz()[0] == 200, timeout)

    def monitor(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.work / "monitor.sock"))
            s.sendall(command.encode() + b"\n")
            time.sleep(1)

    def stop(self, timeout: float = 120) -> None:
        """ACPI-less power button (virt's GPIO key) first; qemu killed when that does not do."""
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(OSError):
            self.monitor("system_powerdown")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log("the guest did not power off; killing qemu")
            self.proc.kill()
            self.proc.wait()

    def poweroff(self, timeout: float = 120) -> None:
        assert self.proc is not None
        self.ssh("systemctl poweroff", check=False, timeout=20)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()


def settings_text(pubkey: str, *, bad: bool = False) -> str:
    lines = [
        "# written by image/vmtest.py",
        f"hostname = {HOSTNAME}",
        f"ssh_authorized_key = {pubkey}",
        f"auth_token = {TOKEN}",
        "timezone = Europe/Berlin",
        "sensor.driver = i2c-typo" if bad else "sensor.driver = sim",
    ]
    return "\r\n".join(lines) + "\r\n"  # as a Windows editor would save it


def rows_on_disk(vm: VM) -> int:
    out = vm.ssh(
        f"find {READINGS} -name '*.csv' ! -name aggregate_data.csv -exec cat {{}} + | wc -l"
    )
    return int(out.strip())


# runs a shell command on a host (the VM over SSH; a test's own machine): stdin, exit status kept
Shell = Callable[[str, str | None], subprocess.CompletedProcess[str]]


def window_rate(
    shell: Shell,
    since: float,
    seconds: float = RATE_WINDOW_S,
    readings: str = READINGS,
    script: str = REMOTE_GAP_SCRIPT,
    polls: int = 80,
    poll_s: float = 1.0,
) -> tuple[int, dict[str, Any]]:
    """The rows stored with timestamps in [since, since + seconds], by readings_gap.py on the host.

    Counting the rows' own timestamps, not the lines that reached the files between two looks:
    a line count moves with where the 1 s flushes fall (30 s of lines once read 732/s).
    The script exits 2 while the window's end is not flushed yet: polled again, up to `polls`
    runs. Returns its exit status (0: 800 +- 1 rows/s and no hole above MAX_GAP_S; 1: not; 2:
    the window's end never reached the disk) and its report.
    """
    command = shlex.join(
        [
            "python3", script, readings,
            "--since", f"{since:.6f}", "--until", f"{since + seconds:.6f}",
            "--max-gap", str(MAX_GAP_S), "--rate", str(RATE),
            "--rate-tolerance", str(RATE_TOLERANCE),
        ]
    )  # fmt: skip
    proc = shell(command, None)
    for _ in range(polls - 1):
        if proc.returncode != 2 or not proc.stdout.startswith("{"):
            break
        time.sleep(poll_s)
        proc = shell(command, None)
    if proc.returncode == 1 and not proc.stdout.startswith("{"):  # fewer than two rows: no report
        return 1, {"message": proc.stdout.strip(), "rows_per_s": 0.0}
    if proc.returncode not in (0, 1, 2) or not proc.stdout.startswith("{"):
        # 2 from python itself (no such script, a bad argument) is not "poll again"
        raise CheckError(f"`{command}` exited {proc.returncode}: {proc.stderr.strip()}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, report


def loss_counters(metrics: str) -> dict[str, float]:
    """The LOSS_METRICS of a /metrics text, a `cause` label kept in the name."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        match = re.fullmatch(r'(wilo_[a-z_]+)(?:\{cause="([a-z_]+)"\})? (\S+)', line)
        if match and match[1] in LOSS_METRICS:
            name = f"{match[1]}{{{match[2]}}}" if match[2] else match[1]
            found[name] = float(match[3])
    return found


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each counter gained over a window (a counter missing before counts from 0)."""
    return {name: after[name] - before.get(name, 0.0) for name in sorted(after)}


def stored_rate(vm: VM, what: str, report: dict[str, Any]) -> None:
    """Rows stored over the next RATE_WINDOW_S on the VM's own clock: 800 +- 1 per second.

    A shortfall is noted in report["failed"] and the run goes on (second boot, drill): the rate
    under emulation depends on the host's load, the other checks do not.
    """
    put = vm.shell(f"cat > {REMOTE_GAP_SCRIPT}", stdin=GAP_SCRIPT.read_text())
    check(put.returncode == 0, f"readings_gap.py copied to the VM ({put.stderr.strip()})")
    counters = loss_counters(vm.metrics())
    since = float(vm.ssh("date +%s.%N"))  # the service stamps rows with the VM's clock
    time.sleep(RATE_WINDOW_S)
    # where missing rows went: not sampled (a late sampler), lost in hand-off, dropped by the store
    lost = counter_deltas(counters, loss_counters(vm.metrics()))
    guest_load = vm.ssh("cat /proc/loadavg").strip()
    rc, found = window_rate(lambda command, stdin: vm.shell(command, stdin), since)
    log(f"{what}: rows stored over {RATE_WINDOW_S:.0f} s: {json.dumps(found)}")
    log(f"{what}: counters over the window: {json.dumps(lost)}; guest load {guest_load}")
    report[f"{what}_rows_per_s"] = found.get("rows_per_s")
    report[f"{what}_max_gap_s"] = found.get("max_gap_s")
    report[f"{what}_counters"] = lost
    report[f"{what}_host_load"] = os.getloadavg()
    soft_check(
        report,
        rc == 0,
        f"{what}: rows stored at {found.get('rows_per_s')}/s over {RATE_WINDOW_S:.0f} s "
        f"({RATE:.0f} +- {RATE_TOLERANCE:.0f} wanted), largest hole {found.get('max_gap_s')} s "
        f"(<= {MAX_GAP_S} s wanted); readings_gap.py exit {rc}",
    )


def ssh_works(vm: VM) -> bool:
    return probe([*vm.ssh_argv(), "true"], timeout=15).returncode == 0


def mark_times(vm: VM) -> dict[str, str]:
    out = vm.ssh("cd /var/lib/wilo-firstboot && stat -c '%n %Y' " + " ".join(MARKS))
    return dict(line.split() for line in out.splitlines() if line.strip())


def find_image(dist: Path) -> tuple[Path, str]:
    build = json.loads((dist / "build-info.json").read_text())
    image = dist / f"wilo-appliance-{build['version']}-arm64.img.xz"
    if not image.exists():
        raise CheckError(f"{image} not found: run `make image` first")
    return image, build["version"]


def verify_sha256(image: Path) -> None:
    sums = image.with_name(image.name + ".sha256").read_text()
    want = next(line.split()[0] for line in sums.splitlines() if line.endswith(image.name))
    digest = hashlib.sha256()
    with image.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    check(digest.hexdigest() == want, f"{image.name} matches its .sha256")


def check_boot_files(disk: Disk) -> tuple[bytes, bytes, str]:
    names = disk.names()
    config = disk.read("config.txt").decode()
    cmdline = disk.read("cmdline.txt").decode().strip()
    log(f"FAT partition: {' '.join(sorted(names))}")
    log(f"config.txt:\n{config}")
    log(f"cmdline.txt: {cmdline}")
    kernel_name = re.search(r"^kernel=(\S+)", config, re.MULTILINE)
    initrd_name = re.search(r"^initramfs (\S+)", config, re.MULTILINE)
    check(
        kernel_name is not None and initrd_name is not None,
        "config.txt names a kernel and an initramfs",
    )
    assert kernel_name is not None and initrd_name is not None
    check(
        kernel_name[1] in names and initrd_name[1] in names,
        f"the FAT partition holds {kernel_name[1]} and {initrd_name[1]}",
    )
    check(
        any(n.startswith("start4") for n in names) and any(n.startswith("bcm2711") for n in names),
        "the Pi 4 firmware (start4*.elf) and device trees (bcm2711-*) are on the FAT partition",
    )
    check("arm_64bit=1" in config, "config.txt boots the 64-bit kernel (arm_64bit=1)")
    for line in ("dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000"):
        check(line in config.splitlines(), f"config.txt has {line} (pi_tuning)")
    tokens = cmdline.split()
    for token in ("root=LABEL=wilo-root", "isolcpus=3", "nohz_full=3", "rcu_nocbs=3"):
        check(token in tokens, f"cmdline.txt has {token}")
    check("wilo-settings.example.txt" in names, "the FAT partition has the settings example")
    check("wilo-settings.txt" not in names, "no settings file ships (each card gets its own)")
    return disk.read(kernel_name[1]), disk.read(initrd_name[1]), cmdline


def qemu_cmdline(cmdline: str) -> str:
    """The image's own cmdline.txt, with the Pi's consoles swapped for virt's serial port."""
    tokens = [t for t in cmdline.split() if not t.startswith("console=")]
    return " ".join([*tokens, "console=ttyAMA0"])


def bad_settings_boot(vm: VM, disk: Disk, pubkey: str, report: dict[str, Any]) -> None:
    disk.write("wilo-settings.txt", settings_text(pubkey, bad=True).encode(), vm.work / "s.txt")
    vm.start("console-bad-settings.log")
    t = vm.wait_for(
        "the console message about the bad settings",
        lambda: "settings NOT applied" in vm.console.read_text(errors="replace"),
        timeout=1800,
    )
    report["bad_settings_message_s"] = round(t, 1)
    console = vm.console.read_text(errors="replace")
    check(
        "line 6: sensor.driver: must be one of mpu6050, sim" in console,
        "the console names the bad line and key",
    )

    def password_refused() -> bool:
        proc = probe(
            [
                *vm.ssh_argv(
                    "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"
                ),
                "true",
            ],
            timeout=20,
        )
        return proc.returncode == 255 and "Permission denied (publickey)" in proc.stderr

    vm.wait_for("sshd offering public keys only", password_refused, timeout=300)
    check(True, "with bad settings sshd is up and offers no password login")
    key_login = probe([*vm.ssh_argv(), "true"], timeout=20)
    check(key_login.returncode != 0, "the bad file's SSH key was not applied either")
    vm.stop()
    log(f"bad-settings boot: message after {t:.0f} s")


def first_boot(vm: VM, disk: Disk, pubkey: str, version: str, report: dict[str, Any]) -> None:
    disk.write("wilo-settings.txt", settings_text(pubkey).encode(), vm.work / "s.txt")
    vm.start("console-first-boot.log")
    report["first_boot_ssh_s"] = round(vm.wait_ssh(), 1)
    report["first_boot_healthz_s"] = round(vm.wait_healthz(), 1)
    log(f"first boot: SSH {report['first_boot_ssh_s']} s, /healthz after {vm.elapsed():.0f} s")
    status, health = vm.healthz()
    check(status == 200, "/healthz answers 200 on the forwarded port")
    check(str(health.get("release", "")).startswith(version), f"/healthz names release {version}-*")
    marks = mark_times(vm)
    check(sorted(marks) == sorted(MARKS), f"first-boot marks {', '.join(MARKS)}")
    check(vm.ssh("hostname").strip() == HOSTNAME, f"hostname {HOSTNAME} from the settings")
    check(
        vm.ssh("readlink /etc/localtime").strip() == "/usr/share/zoneinfo/Europe/Berlin",
        "time zone from the settings",
    )
    size = int(vm.ssh("findmnt -bno SIZE /").strip())
    check(size > 2.5 * 2**30, f"the root filesystem grew to the card ({size / 2**30:.2f} GiB)")
    check(vm.ssh("swapon --noheadings --show").strip() == "", "no swap")
    options = vm.ssh("findmnt -no OPTIONS /").strip().split(",")
    check("noatime" in options, f"root mounted noatime ({','.join(options)})")
    check(
        vm.ssh("findmnt -no FSTYPE /boot/firmware").strip() == "vfat",
        "the FAT partition mounted at /boot/firmware",
    )
    # Without nofail a FAT device slower than systemd's device timeout (udev's coldplug under
    # emulation took longer) sent the whole boot to emergency mode, SSH down.
    fstab = vm.ssh("findmnt --fstab -no OPTIONS /boot/firmware").strip().split(",")
    check("nofail" in fstab, f"/boot/firmware is nofail in fstab ({','.join(fstab)})")
    journald = vm.ssh("systemd-analyze cat-config systemd/journald.conf")
    check(
        "SystemMaxUse=64M" in journald and "RateLimitBurst=2000" in journald,
        "journald bounded in size and rate",
    )
    sshd = vm.ssh("sshd -T").splitlines()
    check("passwordauthentication no" in sshd, "sshd: no password authentication")
    keys = sorted(vm.ssh("cd /etc/ssh && ls ssh_host_*_key").split())
    want_keys = ["ssh_host_ecdsa_key", "ssh_host_ed25519_key"]
    check(keys == want_keys, f"SSH host keys ed25519 and ecdsa only ({keys})")
    # e.g. the governor unit on a machine without cpufreq policies failed here before
    failed = vm.ssh("systemctl --failed --no-legend --plain").strip()
    check(failed == "", f"no failed unit ({failed or 'none'})")
    shown = vm.ssh("systemctl show wilo-backend -p " + " -p ".join(SANDBOX))
    props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    for key, want in SANDBOX.items():
        # list properties come back in systemd's order (RestrictAddressFamilies sorted), not ours
        check(
            sorted(props.get(key, "").split()) == sorted(want.split()),
            f"unit sandbox {key}={want} (systemctl show: {props.get(key)!r})",
        )
    user = vm.ssh("ps -o user= -p $(systemctl show -p MainPID --value wilo-backend)").strip()
    check(user == "wilo", f"the service runs as wilo ({user})")
    config = vm.ssh("cat /etc/wilo-backend/config.toml")
    check(f'auth_token = "{TOKEN}"' in config, "the service config carries the card's token")
    journal = vm.ssh("journalctl -b -o cat -u wilo-firstboot")
    check("first boot done" in journal, "the first boot's journal says it is done")
    stored_rate(vm, "first_boot", report)


def second_boot(vm: VM, report: dict[str, Any]) -> None:
    marks = mark_times(vm)
    rows = rows_on_disk(vm)
    fingerprint = vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub")
    vm.ssh("systemctl reboot", check=False, timeout=20)
    vm.wait_for("SSH to go down", lambda: not ssh_works(vm), 120)
    vm.started = time.monotonic()  # from the reboot on: qemu restarts the same kernel
    # known_hosts holds the first boot's key: a regenerated key would fail this login
    report["second_boot_ssh_s"] = round(vm.wait_ssh(), 1)
    report["second_boot_healthz_s"] = round(vm.wait_healthz(), 1)
    log(f"second boot: SSH {report['second_boot_ssh_s']} s, /healthz after {vm.elapsed():.0f} s")
    check(vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub") == fingerprint, "same SSH host key")
    check(mark_times(vm) == marks, "no first-boot mark was written again")
    condition = vm.ssh("systemctl show -p ConditionResult --value wilo-firstboot").strip()
    check(condition == "no", "wilo-firstboot skipped by its condition on the second boot")
    check(
        "wilo-firstboot:" not in vm.ssh("journalctl -b -o cat -u wilo-firstboot"),
        "no first-boot step in this boot's journal",
    )
    check(rows_on_disk(vm) >= rows, "the rows of the first boot are still on disk")


def drill(vm: VM, dist: Path, report: dict[str, Any]) -> None:
    """The deploy playbook upgrades the image-built Pi; rollback.yml goes back."""
    home = vm.work / "ansible-home"
    inventory = vm.work / "inventory.yml"
    known_hosts = vm.work / "known_hosts"
    host = {
        "ansible_host": "127.0.0.1",
        "ansible_port": vm.ssh_port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(vm.key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    group_vars = {
        "wilo_backend_auth_token": TOKEN,
        "wilo_backend_sensor_driver": "sim",
        # another config is another release (the name hashes dist + config)
        "wilo_backend_log_level": "DEBUG",
        # TCG is slow: the new virtualenv's first start takes longer than on a Pi
        "wilo_backend_health_retries": 90,
    }
    inventory.write_text(
        json.dumps({"wilo_pis": {"hosts": {"wilo-vm": host}, "vars": group_vars}}, indent=2)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible/ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    playbook = Path(sys.executable).parent / "ansible-playbook"
    before = vm.healthz()[1]["release"]
    oldest = vm.ssh(
        f"find {READINGS} -name '*.csv' ! -name aggregate_data.csv | sort | head -1"
    ).strip()
    rows = rows_on_disk(vm)

    t0 = time.monotonic()
    run(playbook, "-i", inventory, REPO / "ansible/deploy.yml",
        "-e", f"wilo_backend_dist_dir={dist}", env=env)  # fmt: skip
    report["drill_deploy_s"] = round(time.monotonic() - t0, 1)
    after = vm.healthz()[1]["release"]
    check(after != before, f"deploy.yml switched the image's release {before} to {after}")
    check(
        vm.ssh("readlink /opt/wilo-backend/previous").strip().endswith(before),
        "`previous` points at the image's release",
    )
    check(rows_on_disk(vm) >= rows, "the image's rows survived the upgrade")
    check(
        vm.ssh(f"test -s {oldest} && echo yes").strip() == "yes",
        f"the oldest readings ({oldest}) are still there",
    )

    t0 = time.monotonic()
    run(playbook, "-i", inventory, REPO / "ansible/rollback.yml", env=env)
    report["drill_rollback_s"] = round(time.monotonic() - t0, 1)
    check(vm.healthz()[1]["release"] == before, f"rollback.yml went back to {before}")
    stored_rate(vm, "after_rollback", report)
    check(rows_on_disk(vm) >= rows, "the rows are still there after the rollback")


@contextlib.contextmanager
def workdir(path: Path, keep: bool) -> Iterator[Path]:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if not keep:
            for item in path.iterdir():  # the consoles stay for a look afterwards
                if not item.name.startswith("console") and item.name != "report.json":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image-test", description=__doc__)
    parser.add_argument("--dist-dir", type=Path, default=REPO / "dist")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/wilo-image-test"))  # noqa: S108
    parser.add_argument("--card-gib", type=int, default=3, help="the card the image is put on")
    parser.add_argument("--keep", action="store_true", help="keep the disk and keys")
    parser.add_argument("--no-bad-settings", action="store_true")
    parser.add_argument(
        "--drill", action="store_true", help="then upgrade with deploy.yml and roll back"
    )
    parser.add_argument(
        "--raw-image", type=Path, default=None, help="an uncompressed image instead of the .img.xz"
    )
    args = parser.parse_args(argv)
    dist = args.dist_dir.resolve()
    report: dict[str, Any] = {}
    vm: VM | None = None
    t_start = time.monotonic()
    with workdir(args.work, args.keep) as work:
        try:
            raw = work / "card.img"
            if args.raw_image is not None:  # a build's uncompressed image, to iterate faster
                version = json.loads((dist / "build-info.json").read_text())["version"]
                run("cp", "--sparse=always", args.raw_image, raw)
            else:
                image, version = find_image(dist)
                verify_sha256(image)
                with raw.open("wb") as out:
                    run("xz", "-dc", image, stdout=out)
                report["xz_mib"] = round(image.stat().st_size / 2**20, 1)
            report["raw_mib"] = raw.stat().st_size // 2**20
            disk = Disk(raw)
            kernel, initrd, cmdline = check_boot_files(disk)
            (work / "vmlinuz").write_bytes(kernel)
            (work / "initrd.img").write_bytes(initrd)
            os.truncate(raw, args.card_gib * 2**30)  # a bigger card: first boot grows the root
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmtest", "-f", work / "id")
            pubkey = (work / "id.pub").read_text().strip()
            vm = VM(work, raw, work / "vmlinuz", work / "initrd.img", qemu_cmdline(cmdline),
                    work / "id")  # fmt: skip
            if not args.no_bad_settings:
                bad_settings_boot(vm, disk, pubkey, report)
            first_boot(vm, disk, pubkey, version, report)
            second_boot(vm, report)
            if args.drill:
                drill(vm, dist, report)
            vm.poweroff()
            if report.get("failed"):
                log("FAILED: " + "; ".join(report["failed"]))
                return 1
        except (CheckError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log(f"FAILED: {exc}")
            if vm is not None:
                vm.stop(30)
            return 1
        finally:
            report["total_s"] = round(time.monotonic() - t_start, 1)
            (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            log(f"figures: {json.dumps(report)}")
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
