"""Facts gathered at the edges, for the judges: a port's mode and owner, a short listen on the serial
port, a broker's CONNACK, an HTTP answer, the disk, the daemon's process."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.doctor.judges import DiskFacts, PortFacts, ProbeResult, Reach
from gateway.logs import get_logger

log = get_logger("quartier.gateway.doctor")

# -- gathering facts (I/O) -------------------------------------------------------------------------


def port_facts(path: str) -> PortFacts:
    by_id = Path("/dev/serial/by-id")
    try:
        usb = tuple(sorted(p.name for p in by_id.iterdir()))
    except OSError:
        usb = ()
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return PortFacts(path, exists=False, usb_serial=usb)
    target = os.path.realpath(path) if p.is_symlink() else None
    try:
        import grp

        group = grp.getgrgid(st.st_gid).gr_name
    except (KeyError, ImportError):
        group = str(st.st_gid)
    return PortFacts(
        path, exists=True, target=target, is_char_device=stat.S_ISCHR(st.st_mode), group=group,
        group_rw=bool(st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP),
        accessible=os.access(path, os.R_OK | os.W_OK), usb_serial=usb,
    )


def probe_port(port: str, seconds: float) -> ProbeResult:
    """Listen on the port for up to ``seconds`` (both line speeds), stopping after 3 good telegrams."""
    from p1.serial_reader import SerialReader, is_valid

    try:
        import serial

        serial.Serial(port).close()  # fail fast with the reason (permission denied, busy, gone)
    except (OSError, ValueError) as exc:
        return ProbeResult(seconds, error=str(getattr(exc, "strerror", None) or exc))
    reader = SerialReader(port, baudrate=None, detect_timeout=max(1.0, seconds / 2), reconnect_delay=0.2,
                          max_reconnect_delay=1.0, read_timeout=0.2)
    counts = {"telegrams": 0, "valid": 0, "crc": 0}

    def listen() -> None:
        for t in reader:
            counts["telegrams"] += 1
            counts["crc"] += t.crc_ok is False
            if is_valid(t):
                counts["valid"] += 1
                if counts["valid"] >= 3:
                    break

    started = time.monotonic()
    thread = threading.Thread(target=listen, name="doctor-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    reader.close()
    thread.join(2.0)
    stray = reader.framer.discarded_bytes + reader.framer.buffered
    return ProbeResult(round(time.monotonic() - started, 1), counts["telegrams"], counts["valid"], counts["crc"], stray)


def mqtt_reach(host: str, port: int, *, username: str | None = None, password: str | None = None,
               ca_file: str | Path | None = None, timeout: float = 3.0) -> Reach:
    """TCP connect (TLS with the given CA), then an MQTT 3.1.1 CONNECT: the CONNACK's return code
    says whether we are welcome."""
    import ssl

    target = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Reach(target, False, error=exc.strerror or str(exc))
    if ca_file is not None:
        try:
            ctx = ssl.create_default_context(cafile=str(ca_file))
            sock = ctx.wrap_socket(sock, server_hostname=host)
        except ssl.SSLError as exc:
            sock.close()
            return Reach(target, True, error=f"TLS: {exc.reason or exc}")
        except OSError as exc:  # the CA file itself, or the connection dropped during the handshake
            sock.close()
            return Reach(target, True, error=f"TLS: {exc.strerror or exc}")
    with sock:
        try:
            sock.sendall(mqtt_connect_packet(f"quartier-doctor-{os.getpid()}", username, password))
            head = _recv_exact(sock, 4)
        except OSError as exc:
            return Reach(target, True, error=f"no MQTT answer: {exc.strerror or exc}")
        if head is None or head[0] != 0x20 or head[1] != 2:
            return Reach(target, True, error="no MQTT answer")
        try:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass
        return Reach(target, True, code=head[3])


def mqtt_connect_packet(client_id: str, username: str | None = None, password: str | None = None) -> bytes:
    """An MQTT 3.1.1 CONNECT packet (clean session, 10 s keep-alive)."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("!H", len(raw)) + raw

    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = s("MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + s(client_id)
    if username:
        body += s(username)
        if password:
            body += s(password)
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x10]) + bytes(encoded) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def http_reach(url: str, timeout: float = 3.0) -> Reach:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return Reach(url, True, code=resp.status)
    except urllib.error.HTTPError as exc:
        return Reach(url, True, code=exc.code)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Reach(url, False, error=getattr(reason, "strerror", None) or str(reason))


def influx_reach(base_url: str, timeout: float = 3.0) -> Reach:
    """InfluxDB 2 answers ``/health``; servers speaking only the write API answer ``/ping``."""
    r = http_reach(base_url + "/health", timeout)
    if r.answered and r.code == 404:
        ping = http_reach(base_url + "/ping", timeout)
        if ping.answered:
            return Reach(base_url, True, code=200 if ping.code in (200, 204) else ping.code)
    return Reach(base_url, r.answered, r.code, r.error)


def disk_facts(path: Path, max_bytes: int | None) -> DiskFacts:
    """Sizes by stat; through :meth:`gateway.store.Store.disk_status` when this user owns the store
    (opening it as another user, e.g. root, could leave files the service cannot write)."""
    from gateway.store import DEFAULT_MIN_FREE_BYTES

    parent = path.parent if path.parent.exists() else Path("/")
    free = shutil.disk_usage(parent).free
    if not path.exists():
        return DiskFacts(str(path), False, free_bytes=free, max_bytes=max_bytes, min_free_bytes=DEFAULT_MIN_FREE_BYTES)
    if path.stat().st_uid == os.geteuid():
        import sqlite3

        from gateway.store import Store, StoreError

        try:
            with Store(path, max_bytes=max_bytes) as store:
                d = store.disk_status()
            return DiskFacts(str(path), True, d.file_bytes, d.free_bytes, d.max_bytes, d.min_free_bytes, d.outbox_rows)
        except (OSError, sqlite3.Error, StoreError) as exc:  # a damaged store: the sizes below still tell
            log.debug("doctor.store_unreadable", extra={"error": str(exc)})
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
               if p.exists())
    return DiskFacts(str(path), True, size, free, max_bytes, DEFAULT_MIN_FREE_BYTES)


def pid_alive(pid: object) -> bool | None:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def health_age_s(health: dict[str, Any] | None, now: datetime) -> float | None:
    if not health or not isinstance(health.get("time"), str):
        return None
    try:
        t = datetime.fromisoformat(health["time"].replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (now - t).total_seconds())
