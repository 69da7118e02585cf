"""The daemon's boundary with NetfilterQueue: the compiled packet path only with the pinned
NetfilterQueue (it reads private fields), and the pure-Python reference of set_queue_flags."""

from __future__ import annotations

import errno
import logging
import pathlib
import re
import socket
import struct

import pytest

from middlebox.io import daemon

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def compiled_allowed(monkeypatch):
    monkeypatch.delenv("MIDDLEBOX_PURE_PYTHON", raising=False)


def test_other_version_selects_the_reference_path_with_one_clear_line(compiled_allowed, caplog):
    with caplog.at_level(logging.WARNING, logger="middlebox.run"):
        assert daemon.packet_path(nfq_version="1.2.0") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "NetfilterQueue 1.2.0 is installed" in lines[0]
    assert f"NetfilterQueue=={daemon.NETFILTERQUEUE_PIN}" in lines[0]
    assert "pure-Python packet path" in lines[0]


def test_pinned_version_selects_the_compiled_path_when_built(compiled_allowed, caplog):
    try:
        from middlebox import _cnfq
    except ImportError:
        pytest.skip("middlebox._cnfq is not built")
    with caplog.at_level(logging.WARNING, logger="middlebox.run"):
        assert daemon.packet_path(nfq_version=daemon.NETFILTERQUEUE_PIN) is _cnfq
    assert not caplog.records


def test_pure_python_switch_wins_without_looking_at_the_version(monkeypatch, caplog):
    monkeypatch.setenv("MIDDLEBOX_PURE_PYTHON", "1")
    assert daemon.packet_path(nfq_version="0.0.1") is None
    assert not caplog.records


def test_the_pin_is_the_one_in_pyproject_and_the_one_installed():
    text = (ROOT / "pyproject.toml").read_text()
    pins = re.findall(r'"NetfilterQueue==([^"]+)"', text)
    assert pins and set(pins) == {daemon.NETFILTERQUEUE_PIN}, pins  # build + runtime
    assert "NetfilterQueue>" not in text
    assert daemon.netfilterqueue_version() == daemon.NETFILTERQUEUE_PIN


# -- the reference of _cnfq.set_queue_flags --------------------------------------------------


class FakeNetlink:
    """The queue socket: records what is sent, answers with the given datagrams."""

    def __init__(self, *replies: bytes) -> None:
        self.sent: list[bytes] = []
        self.replies = list(replies)
        self.a, self.b = socket.socketpair()  # something select() can wait on

    def fileno(self) -> int:
        return self.b.fileno()

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        for _ in self.replies:
            self.a.send(b"x")
        return len(data)

    def recv(self, n: int) -> bytes:
        self.b.recv(1)
        return self.replies.pop(0)


class FakeQueue:
    def __init__(self) -> None:
        self.handled: list[bytes] = []

    def run_socket(self, s) -> None:
        while True:
            try:
                self.handled.append(s.recv(4096))
            except BlockingIOError:
                return


def ack(seq: int, error: int) -> bytes:
    return (struct.pack("=IHHII", 36, daemon.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", error)
            + bytes(16))


@pytest.mark.parametrize("error", [0, -errno.EOPNOTSUPP])
def test_py_set_queue_flags_message_and_answer(monkeypatch, error):
    packet_msg = struct.pack("=IHHII", 20, (3 << 8) | 0, 0, 0, 0) + bytes(4)  # NFQNL_MSG_PACKET
    sock = FakeNetlink()
    q = FakeQueue()
    monkeypatch.setattr(daemon.time, "time", lambda: 1000)
    monkeypatch.setattr(daemon.os, "getpid", lambda: 7)
    sock.replies = [packet_msg, ack(1000 ^ 7, error)]
    got = daemon._py_set_queue_flags(sock, q, 5, daemon.NFQA_CFG_F_FAIL_OPEN,
                                     daemon.NFQA_CFG_F_FAIL_OPEN)
    assert got == -error
    assert q.handled == [packet_msg]  # a packet read before the answer reached the callback
    msg = sock.sent[0]
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), 0x302, 0x5, 1000 ^ 7)
    assert msg[16:20] == bytes([socket.AF_UNSPEC, 0, 0, 5])  # nfgenmsg, res_id = queue 5
    assert msg[20:] == (struct.pack("=HH", 8, 4) + struct.pack("!I", 1)
                        + struct.pack("=HH", 8, 5) + struct.pack("!I", 1))


def test_py_set_queue_flags_times_out_without_an_answer():
    sock = FakeNetlink()
    assert daemon._py_set_queue_flags(sock, FakeQueue(), 0, 1, 1, timeout=0.05) == errno.ETIMEDOUT


# -- a kernel that refuses the flag ------------------------------------------------------------


class RefusingPath:
    def set_queue_flags(self, nfq, mask, flags):
        return errno.EOPNOTSUPP


class UnsendablePath:
    def set_queue_flags(self, nfq, mask, flags):
        raise OSError(errno.EPERM, "not permitted")


@pytest.mark.parametrize("path", [RefusingPath(), UnsendablePath()], ids=["refused", "oserror"])
def test_refused_fail_open_is_logged_once_and_not_fatal(path, caplog):
    import argparse

    parser = argparse.ArgumentParser()
    daemon.add_arguments(parser)
    d = daemon.Daemon(parser.parse_args(["--queue", "3", "--queue-maxlen", "100", "--fail-open"]))
    with caplog.at_level(logging.WARNING, logger="middlebox.run"):
        assert "refused" in d.set_fail_open(path, object(), None)
        d.set_fail_open(path, object(), None)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "queue 3" in lines[0] and "NFQA_CFG_F_FAIL_OPEN" in lines[0]
    assert "100 packets wait" in lines[0] and "DROPPED" in lines[0]
    assert d.counters()["fail_open_unset"] == 2


def test_no_fail_open_leaves_the_flag_alone():
    import argparse

    parser = argparse.ArgumentParser()
    daemon.add_arguments(parser)
    d = daemon.Daemon(parser.parse_args(["--no-fail-open"]))
    assert d.set_fail_open(UnsendablePath(), object(), None) == "full queue drops"
    d = daemon.Daemon(parser.parse_args([]))  # the default: a full queue drops
    assert d.set_fail_open(UnsendablePath(), object(), None) == "full queue drops"
