"""The state file (`middlebox run --state-dir DIR`, default /run/middlebox): which connections
this daemon converts, for a successor should it be killed outright.

A daemon killed by SIGKILL, a crash or the OOM killer resets nothing, and its successor does
not know its connections (middlebox/core/orphans.py): it tells them from a forged segment only
by their numbers, which multipath moving data both ways drifts past recognition (measured: a
1 MB upload then a download on two paths hung until the applications gave up). So every
second the daemon writes down what `Converter.recorded` gives (the 4-tuple and the peer's key
of each connection the server treats as MPTCP); its successor reads the file at start and
resets exactly those orphans, the peer with MP_FASTCLOSE.

* **Where**: `DIR/queue-N.flows`, DIR made mode 0700, the file 0600, both root's. The
  default is on tmpfs (/run): the records die with the machine, as the connections do.
* **What**: the keys are the MPTCP keys of live connections (RFC 8684 §2.1: they
  authenticate joins and MP_FASTCLOSE of that connection only, nothing after it ends). They
  never reach a log; the file is readable by root alone, who can read the daemon's memory
  anyway. `--state-dir ""` writes nothing (a killed daemon's orphans then fall back to the
  numbers test).
* **Format**: a header, then records appended, each with its CRC-32: add or drop one
  connection (58 bytes), or one extra subflow with its connection (95 bytes: when subflow
  1's path is down at the restart only the extra subflows' segments reach the successor). A
  record torn by the kill is ignored, as is anything after it. When dropped records
  outnumber the live ones (and at start), the file is rewritten whole (a temporary file
  renamed over it: a kill leaves the old or the new one).
* **Time**: the header (30 bytes) holds the boot's id and a CLOCK_MONOTONIC stamp, rewritten
  in place at every sync: the records were alive then. A record carried over from a
  predecessor (not yet used, written back by its successor) keeps its own stamp. The
  successor believes a record KNOWN_TTL (10 min) from its stamp in all, however many
  daemons carried it; a file from an earlier boot, or without a header (an older version),
  is not believed.
* **Cost**: one pass over the flow table a second (`Converter.recorded`), a write of 58 bytes
  per connection that starts or ends, and the 30-byte header rewritten in place each second.
* A clean stop resets every such connection (Converter.stop) and removes the file.
* Nothing here raises into the loop: an error is logged once and the file is given up.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import time
import uuid
import zlib

from middlebox.core.orphans import KNOWN_TTL

log = logging.getLogger("middlebox.run")

ADD, DROP, ADD_JOIN, DROP_JOIN, HEADER_OP = 1, 2, 3, 4, 5
# op, address length, guest, gport, peer, pport, peer key, stamp (0: the header's)
_REC = struct.Struct("!BB16sH16sHQd")
# an extra subflow: op, address lengths (its own, its connection's), local, lport, remote,
# rport, then its connection's guest, gport, peer, pport, the peer's key and the stamp
_JREC = struct.Struct("!BBB16sH16sH16sH16sHQd")
_HEAD = struct.Struct("!BB16sd")  # op, format version, boot id, CLOCK_MONOTONIC stamp
VERSION = 1
_CRC = struct.Struct("!I")
RECORD = _REC.size + _CRC.size  # 58 bytes
JOIN_RECORD = _JREC.size + _CRC.size  # 95 bytes
HEADER = _HEAD.size + _CRC.size  # 30 bytes
MAX_BYTES = 1 << 28  # a file beyond this is not read (not ours, or broken)
EVERY = 1.0  # s between two syncs
DEFAULT_DIR = "/run/middlebox"


def _encode(op: int, key: tuple, value, stamp: float = 0.0) -> bytes:
    """A record: `key` a connection's (value: the peer's key or None) or an extra subflow's
    (value: (its connection's key, the peer's key or None)); DROP: the value is not used.
    `stamp`: when the connection was last known alive (0: at the header's stamp)."""
    a, ap, b, bp = key
    if type(value) is tuple or op in (ADD_JOIN, DROP_JOIN):
        conn, peer_key = value if type(value) is tuple else ((b"\0" * len(a), 0, b"\0" * len(a), 0), None)
        g, gp, p, pp = conn
        body = _JREC.pack(op, len(a), len(g), a, ap, b, bp, g, gp, p, pp,
                          0 if peer_key is None else peer_key & 0xFFFFFFFFFFFFFFFF, stamp)
    else:
        body = _REC.pack(op, len(a), a, ap, b, bp, 0 if value is None else value & 0xFFFFFFFFFFFFFFFF,
                         stamp)
    return body + _CRC.pack(zlib.crc32(body))


def _add(key: tuple, value, stamp: float = 0.0) -> bytes:
    """The record that adds `key` (a connection's, or an extra subflow's: a tuple value)."""
    return _encode(ADD_JOIN if type(value) is tuple else ADD, key, value, stamp)


def _header(boot: bytes, now: float) -> bytes:
    body = _HEAD.pack(HEADER_OP, VERSION, boot, now)
    return body + _CRC.pack(zlib.crc32(body))


def boot_id() -> bytes:
    """This boot's id (16 bytes; zeros when the kernel does not tell)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return uuid.UUID(f.read().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)


def decode(data: bytes, stamps: dict | None = None) -> dict:
    """What a file's records leave live (as `Converter.recorded` gives it); stops at the
    first record that is torn, unknown or fails its CRC (what a kill mid-write leaves).
    `stamps`, when given, gets key -> when that record was last known alive (the header's
    stamp, or the record's own), and "boot" -> the header's boot id; no header: nothing."""
    live: dict = {}
    if len(data) < HEADER or data[0] != HEADER_OP:
        return live
    body = data[:_HEAD.size]
    if _CRC.unpack_from(data, _HEAD.size)[0] != zlib.crc32(body):
        return live
    _, version, boot, head = _HEAD.unpack(body)
    if version != VERSION:
        return live
    if stamps is not None:
        stamps["boot"] = boot
    off, end = HEADER, len(data)
    while off < end:
        op = data[off]
        rec = _JREC if op in (ADD_JOIN, DROP_JOIN) else _REC
        if op not in (ADD, DROP, ADD_JOIN, DROP_JOIN) or off + rec.size + _CRC.size > end:
            break
        body = data[off:off + rec.size]
        if _CRC.unpack_from(data, off + rec.size)[0] != zlib.crc32(body):
            break
        off += rec.size + _CRC.size
        if rec is _REC:
            op, alen, a, ap, b, bp, peer_key, stamp = rec.unpack(body)
            if alen not in (4, 16):
                break
            key, value = (a[:alen], ap, b[:alen], bp), peer_key or None  # (0: no key recorded)
        else:
            op, alen, glen, a, ap, b, bp, g, gp, p, pp, peer_key, stamp = rec.unpack(body)
            if alen not in (4, 16) or glen not in (4, 16):
                break
            key = (a[:alen], ap, b[:alen], bp)
            value = ((g[:glen], gp, p[:glen], pp), peer_key or None)
        if op == ADD or op == ADD_JOIN:
            live[key] = value
            if stamps is not None:
                stamps[key] = stamp or head
        else:
            live.pop(key, None)
    return live


class StateFile:
    """The state file of one queue. `take()` the predecessor's records (once, at start),
    `sync(records)` every EVERY seconds, `close(records)` at a clean stop."""

    def __init__(self, directory: str, queue: int, clock=time.monotonic) -> None:
        self.path = os.path.join(directory, f"queue-{queue}.flows")
        self.directory = directory
        self.clock = clock  # CLOCK_MONOTONIC: one clock for every process of a boot
        self.boot = boot_id()
        # the predecessor's records given back by take(): key -> (value, stamp); written back
        # with their own stamp while `records` holds them with that value
        self.carried: dict = {}
        self.stamps: dict = {}  # take()'s records: key -> when last known alive (self.clock)
        self.written: dict = {}  # what the file holds now
        self.dropped = 0  # DROP records in it
        self.fd: int | None = None
        self.failed = False
        self.foreign = False  # the directory is not ours alone (_check_dir): nothing touched

    def take(self) -> dict:
        """The records a predecessor left (key -> peer key) that are younger than KNOWN_TTL
        (`stamps`: when each was last known alive); {} when there is no file, it cannot be
        read (logged) or it is from an earlier boot. The first `sync` rewrites the file as
        ours."""
        try:
            self._check_dir()
            self._sweep()
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                st = os.fstat(fd)
                if (not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES
                        or st.st_uid != os.geteuid()):
                    log.warning("state file %s: not read (owner %d, %d bytes)", self.path,
                                st.st_uid, st.st_size)
                    return {}
                stamps: dict = {}
                records = decode(f.read(MAX_BYTES), stamps)
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.warning("state file %s: not read: %s", self.path, e)
            return {}
        if stamps.get("boot", self.boot) != self.boot:
            log.info("state file %s: written before the last boot, not believed", self.path)
            return {}
        now = self.clock()
        out = {}
        for key, value in records.items():
            t = min(stamps[key], now)
            if now - t <= KNOWN_TTL:
                out[key] = value
                self.carried[key] = (value, t)
                self.stamps[key] = t
        return out

    def _check_dir(self) -> None:
        """The directory is ours alone: a real directory (not a symlink), owned by us, that
        nobody else may write (else anyone could plant a symlink or a file of records in it);
        made 0700 when missing. OSError otherwise."""
        try:
            st = os.lstat(self.directory)
        except FileNotFoundError:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            st = os.lstat(self.directory)
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            self.foreign = True
            raise OSError(errno.EPERM, "the directory is not the daemon's alone (a symlink, "
                          "another owner, or writable by others)", self.directory)

    def _sweep(self) -> None:
        """Remove the temporary files a predecessor killed mid-rewrite left (ours by name:
        queue-N.flows.PID.tmp; unlinking a symlink removes only the link)."""
        prefix = os.path.basename(self.path) + "."
        for name in os.listdir(self.directory):
            if name.startswith(prefix) and name.endswith(".tmp") and name[len(prefix):-4].isdigit():
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass

    def sync(self, records: dict) -> None:
        """Make the file hold `records` (key -> peer key): append what changed; rewrite it
        whole when dropped records outnumber the live ones."""
        if self.failed:
            return
        try:
            carried = self.carried
            for k in [k for k in carried if k not in records]:
                del carried[k]
            if self.fd is None or self._replaced():
                self._rewrite(records)
                return
            written = self.written
            out = [_encode(DROP_JOIN if type(written[k]) is tuple else DROP, k, None)
                   for k in written.keys() - records.keys()]
            self.dropped += len(out)
            for k, v in records.items():
                if written.get(k, -1) != v:
                    out.append(_add(k, v, self._stamp(k, v)))
            if self.dropped > max(1024, len(records)):
                self._rewrite(records)
                return
            if out:
                self._write(b"".join(out))
                self.written = dict(records)
            # (in place: what the file holds was alive now; 30 bytes, one syscall a second)
            os.pwrite(self.fd, _header(self.boot, self.clock()), 0)
        except OSError as e:
            self._fail(e)

    def add(self, records: dict) -> None:
        """Append `records` at once (connections that just started: a kill before the next
        `sync` must not lose them)."""
        if self.failed or self.fd is None:
            return
        written = self.written
        out = [_add(k, v) for k, v in records.items() if written.get(k, -1) != v]
        if not out:
            return
        try:
            if self._replaced():  # (the next sync rewrites it whole)
                return
            self._write(b"".join(out))
        except OSError as e:
            self._fail(e)
            return
        written.update(records)

    def close(self, records: dict) -> None:
        """A clean stop: the file holds `records` (what is left, the predecessor's records not
        yet used), or is removed when there are none."""
        if self.failed:
            return
        try:
            if records:
                self._rewrite(records)
            else:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        except OSError as e:
            self._fail(e)
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def _rewrite(self, records: dict) -> None:
        self._check_dir()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)  # (a killed predecessor's with our pid; a symlink: only it goes)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            data = _header(self.boot, self.clock()) + b"".join(
                _add(k, v, self._stamp(k, v)) for k, v in records.items())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.close(fd)
            os.unlink(tmp)
            raise
        try:
            os.rename(tmp, self.path)
        except OSError:
            os.close(fd)
            raise
        if self.fd is not None:
            os.close(self.fd)
        self.fd = fd  # (the renamed file itself: nothing reopened by name)
        self.written = dict(records)
        self.dropped = 0

    def _stamp(self, key: tuple, value) -> float:
        """A carried record's own stamp; 0 (the header's) for one of our connections."""
        c = self.carried.get(key)
        return c[1] if c is not None and c[0] == value else 0.0

    def _replaced(self) -> bool:
        """Our file is no longer at its path (another instance's rewrite renamed over it, or
        someone removed it): appending would write to nothing anyone reads."""
        return os.fstat(self.fd).st_nlink == 0

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _fail(self, e: OSError) -> None:
        self.failed = True
        log.warning("state file %s: %s; removed and not written from now on (a successor "
                    "after a kill tells this daemon's connections by their numbers only)",
                    self.path, e)
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        # what it holds goes stale from here (ended connections never dropped, and no clean
        # stop removes it): a successor must not believe it
        if self.foreign:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
