"""NbdSource against real qemu: snapshots, images in use, broken images, helper processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.errors import SourceError
from godwit.sources import open_source
from godwit.sources.base import DiskSource
from godwit.sources.nbd import NbdSource

MiB = 1 << 20
SIZE = 8 * MiB


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _qemu_nbd_pids_for(path: Path) -> list[int]:
    """qemu-nbd processes whose command line names ``path``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-nbd" in cmd and str(path).encode() in cmd and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # qemu-nbd loses a SIGTERM that arrives before its main loop runs: follow up with SIGKILL.
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stderr:
        proc.stderr.close()


def _locked(path: Path) -> bool:
    """True once some process holds a lock on ``path``: qemu has opened the image.

    Read from /proc/locks: probing with `qemu-img info` would take a lock of its own and could
    make the very qemu we wait for fail to start.
    """
    ino = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[5].rsplit(":", 1)[-1] == str(ino):
            return True
    return False


def _snapshots(path: Path) -> str:
    return subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(path)], check=True,
                          capture_output=True, text=True).stdout


def _read_all(src: DiskSource) -> bytes:
    buf = bytearray(src.size)
    src.read_into(0, memoryview(buf))
    return bytes(buf)


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, bytes]:
    rng = random.Random(7)
    data = bytearray(SIZE)
    for _ in range(10):
        n = rng.randrange(1, 300_000)
        off = rng.randrange(0, SIZE - n)
        data[off:off + n] = rng.randbytes(n)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    return path, bytes(data)


@pytest.fixture
def qcow2(raw: tuple[Path, bytes]) -> tuple[Path, bytes]:
    path = raw[0].with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw[0]), str(path)],
                   check=True, capture_output=True)
    return path, raw[1]


def _qemu_io_write(path: Path, offset: int, pattern: int, length: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -P {pattern} {offset} {length}", str(path)],
                   check=True, capture_output=True)


@pytest.fixture
def writer(qcow2: tuple[Path, bytes], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A read-write qemu-nbd holding the image open and locked, as a running VM would."""
    sock = tmp_path / "writer.sock"
    proc = subprocess.Popen(["qemu-nbd", "-f", "qcow2", "-k", str(sock), str(qcow2[0])],
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not _locked(qcow2[0]):  # qemu-nbd makes its socket before it opens the image
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "writer qemu-nbd did not start"
        time.sleep(0.02)
    yield proc
    _stop(proc)


def test_qcow2_snapshot_is_point_in_time_and_removed_on_close(qcow2: tuple[Path, bytes]) -> None:
    path, data = qcow2
    src = NbdSource.for_image(path, "qcow2", snapshot=True)
    try:
        assert src.consistency == "crash"
        assert src.warnings == []
        name = src.snapshot_name
        assert name is not None and name.startswith("godwit-")
        assert name in _snapshots(path)
        # The guest keeps writing; the cycle still sees the instant of the snapshot.
        _qemu_io_write(path, MiB, 0xAB, 64 * 1024)
        assert _read_all(src) == data
        pid = src.server_pid
        assert pid is not None and _alive(pid)
    finally:
        src.close()
    assert not _alive(pid)
    assert "godwit-" not in _snapshots(path)
    with NbdSource.for_image(path, "qcow2", snapshot=False) as live:
        assert _read_all(live)[MiB:MiB + 64 * 1024] == bytes([0xAB]) * 64 * 1024


def test_image_in_use_reads_live_with_warning(qcow2: tuple[Path, bytes],
                                              writer: subprocess.Popen[bytes]) -> None:
    path, data = qcow2
    with NbdSource.for_image(path, "qcow2", snapshot=True) as src:
        assert src.consistency == "none"
        assert len(src.warnings) == 1
        assert "open for writing by another process" in src.warnings[0]
        assert "consistency none" in src.warnings[0]
        assert _read_all(src) == data
    assert "godwit-" not in _snapshots(path)
    assert writer.poll() is None  # we did not disturb it


def test_reader_does_not_lock_out_a_writer(qcow2: tuple[Path, bytes], tmp_path: Path) -> None:
    """A VM that starts while a cycle reads its disk must not fail on our lock."""
    path, data = qcow2
    with NbdSource.for_image(path, "qcow2", snapshot=False) as src:
        sock = tmp_path / "late-writer.sock"
        proc = subprocess.Popen(["qemu-nbd", "-f", "qcow2", "-k", str(sock), str(path)],
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while not _locked(path) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert _locked(path)
        finally:
            _stop(proc)
        assert _read_all(src) == data


def test_formats_without_snapshots_warn(raw: tuple[Path, bytes]) -> None:
    path = raw[0].with_suffix(".vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw[0]), str(path)],
                   check=True, capture_output=True)
    with NbdSource.for_image(path, "vmdk", snapshot=True) as src:
        assert src.consistency == "none"
        assert any("vmdk images have no snapshots" in w for w in src.warnings)
        assert _read_all(src) == raw[1]
    with NbdSource.for_image(path, "vmdk", snapshot=False) as src:
        assert src.consistency == "none"
        assert src.warnings == []


def test_stale_godwit_snapshot_is_reported_not_deleted(qcow2: tuple[Path, bytes]) -> None:
    path, data = qcow2
    subprocess.run(["qemu-img", "snapshot", "-c", "godwit-stale", str(path)], check=True)
    with NbdSource.for_image(path, "qcow2", snapshot=True) as src:
        assert src.consistency == "crash"
        assert any("godwit-stale" in w and "qemu-img snapshot -d" in w for w in src.warnings)
        assert _read_all(src) == data
    listing = _snapshots(path)
    assert "godwit-stale" in listing
    assert listing.count("godwit-") == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_qcow2_is_a_source_error(qcow2: tuple[Path, bytes], damage: str) -> None:
    path, _ = qcow2
    if damage == "garbage":
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(random.Random(1).randbytes(200))  # keeps the magic, wrecks the header
    else:
        head = path.read_bytes()[:100]
        path.write_bytes(head)
    with pytest.raises(SourceError) as info:
        NbdSource.for_image(path, "qcow2", snapshot=True)
    err = info.value
    assert str(path) in err.message
    assert "\n" not in err.message
    assert "qcow2" in err.message
    assert err.hint and "qemu-img check" in err.hint
    assert _qemu_nbd_pids_for(path) == []
    assert "godwit-" not in subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(path)],
                                           capture_output=True, text=True).stdout


def test_wrong_format_names_qemus_reason(raw: tuple[Path, bytes]) -> None:
    with pytest.raises(SourceError) as info:
        NbdSource.for_image(raw[0], "qcow2", snapshot=False)
    assert info.value.message == f"disk {raw[0]} cannot be read as qcow2: Image is not in qcow2 format"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        NbdSource.for_image(tmp_path / "nope.qcow2", "qcow2", snapshot=True)
    assert "does not exist" in info.value.message
    assert info.value.hint


def test_qemu_nbd_not_installed(qcow2: tuple[Path, bytes], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SourceError) as info:
        NbdSource.for_image(qcow2[0], "qcow2", snapshot=True)
    assert "qemu-nbd is not installed" in info.value.message
    assert info.value.hint and "qemu-utils" in info.value.hint


def test_libnbd_missing(qcow2: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nbd", None)  # makes `import nbd` fail, as without python3-libnbd
    with pytest.raises(SourceError) as info:
        NbdSource.for_image(qcow2[0], "qcow2", snapshot=True)
    assert "libnbd" in info.value.message
    assert info.value.hint and "python3-libnbd" in info.value.hint


def test_no_qemu_nbd_left_after_close(qcow2: tuple[Path, bytes]) -> None:
    path, _ = qcow2
    src = NbdSource.for_image(path, "qcow2", snapshot=True)
    pid = src.server_pid
    assert pid is not None and _alive(pid)
    src.close()
    assert not _alive(pid)
    assert src.server_pid is None
    assert _qemu_nbd_pids_for(path) == []
    src.close()


def test_helper_killed_under_us_gives_source_error(qcow2: tuple[Path, bytes]) -> None:
    path, _ = qcow2
    with NbdSource.for_image(path, "qcow2", snapshot=False) as src:
        pid = src.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _wait_gone(pid)
        with pytest.raises(SourceError) as info:
            _read_all(src)
        assert str(path) in info.value.message
        with pytest.raises(SourceError):
            list(src.extents(0, src.size))


def test_qemu_nbd_dies_with_a_killed_godwit(qcow2: tuple[Path, bytes]) -> None:
    """kill -9 of godwit: the helper loses its clients and exits; nothing is left running."""
    path, _ = qcow2
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from godwit.sources.nbd import NbdSource
        src = NbdSource.for_image(Path({str(path)!r}), "qcow2", snapshot=True)
        print(src.server_pid, flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert _alive(pid)
        proc.kill()
        proc.wait(timeout=10)
        assert _wait_gone(pid), "qemu-nbd outlived the godwit that started it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    # The snapshot cannot be deleted by a dead process; the next cycle reports it.
    with NbdSource.for_image(path, "qcow2", snapshot=True) as src:
        assert any("probably left by a godwit that was killed" in w for w in src.warnings)


def test_path_with_comma_and_relative_name(raw: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU option strings split on commas; the path must be escaped, snapshots included."""
    folder = raw[0].parent / "vm,disks=1"
    folder.mkdir()
    path = folder / "disk,a.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw[0]), str(path)],
                   check=True, capture_output=True)
    monkeypatch.chdir(folder)
    with NbdSource.for_image(Path(path.name), "qcow2", snapshot=True) as src:
        assert src.consistency == "crash", src.warnings
        assert _read_all(src) == raw[1]
    assert "godwit-" not in _snapshots(path)


def test_snapshot_and_socket_are_named_by_the_temp_tag(raw: tuple[Path, bytes], tmp_path: Path) -> None:
    """Issue 8.2: two images with one file name, opened at once with their tags, each read its own."""
    images = []
    for i, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        src_raw = tmp_path / folder / "disk.raw"
        data = random.Random(i).randbytes(SIZE)
        src_raw.write_bytes(data)
        path = tmp_path / folder / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(src_raw), str(path)],
                       check=True, capture_output=True)
        images.append((path, data))
    sources = [open_source(p, "qcow2", snapshot_dir=tmp_path / "snaps", temp_tag=f"0123abcd-d{i}-c5")
               for i, (p, _) in enumerate(images)]
    try:
        for i, (src, (path, data)) in enumerate(zip(sources, images, strict=True)):
            assert isinstance(src, NbdSource)
            assert src.consistency == "crash"
            name = src.snapshot_name
            assert name is not None and name.startswith(f"godwit-0123abcd-d{i}-c5-")
            assert name in _snapshots(path)
            assert _read_all(src) == data
    finally:
        for s in sources:
            s.close()
    for path, _ in images:
        assert "godwit-" not in _snapshots(path)
