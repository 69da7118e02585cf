"""The state file (middlebox/io/statefile.py): what a killed daemon leaves its successor."""

from __future__ import annotations

import logging
import os
import stat

from middlebox.io import statefile as SF

V4 = (bytes([10, 0, 0, 2]), 40000, bytes([192, 0, 2, 1]), 443)
V6 = (bytes(range(16)), 40001, bytes(range(16, 32)), 80)


def _keys(n, port=20000):
    return {(bytes([10, 0, 0, 2]), port + i, bytes([192, 0, 2, 1]), 443): i + 1 for i in range(n)}


def _read(sf):
    with open(sf.path, "rb") as f:
        return SF.decode(f.read())


def test_records_round_trip_v4_and_v6_with_and_without_a_key(tmp_path):
    sf = SF.StateFile(str(tmp_path / "d"), 3)
    sf.sync({V4: 0xFFFFFFFFFFFFFFFF, V6: None})
    assert sf.path.endswith("queue-3.flows")
    assert _read(sf) == {V4: 0xFFFFFFFFFFFFFFFF, V6: None}
    assert SF.StateFile(str(tmp_path / "d"), 3).take() == {V4: 0xFFFFFFFFFFFFFFFF, V6: None}


def test_only_root_can_read_it(tmp_path):
    sf = SF.StateFile(str(tmp_path / "d"), 0)
    sf.sync({V4: 1})
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sf.path).st_mode) == 0o600


def test_sync_appends_adds_and_drops(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    sf.sync({V4: 1})
    sf.sync({V4: 1, V6: 2})
    assert os.path.getsize(sf.path) == SF.HEADER + 2 * SF.RECORD  # appended, not rewritten
    sf.sync({V6: 3})  # V4 dropped, V6's key changed
    assert os.path.getsize(sf.path) == SF.HEADER + 4 * SF.RECORD
    assert _read(sf) == {V6: 3}
    sf.sync({V6: 3})
    assert os.path.getsize(sf.path) == SF.HEADER + 4 * SF.RECORD  # nothing changed, nothing appended


def test_add_appends_at_once_after_the_first_sync(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    sf.add({V4: 1})  # (no file yet: the first sync writes it whole)
    assert not os.path.exists(sf.path)
    sf.sync({})
    sf.add({V4: 1})
    sf.add({V4: 1})
    assert _read(sf) == {V4: 1} and os.path.getsize(sf.path) == SF.HEADER + SF.RECORD
    sf.sync({V4: 1})  # (the full pass agrees: nothing to append)
    assert os.path.getsize(sf.path) == SF.HEADER + SF.RECORD


def test_the_file_is_rewritten_when_drops_outnumber_the_live(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    many = _keys(3000)
    sf.sync(many)
    sf.sync(dict(list(many.items())[:10]))  # 2990 drops > max(1024, 10)
    assert os.path.getsize(sf.path) == SF.HEADER + 10 * SF.RECORD
    assert _read(sf) == dict(list(many.items())[:10])


def test_a_record_torn_by_a_kill_and_what_follows_it_are_ignored(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    recs = _keys(3)
    sf.sync(recs)
    with open(sf.path, "r+b") as f:
        f.truncate(SF.HEADER + 3 * SF.RECORD - 7)
    assert SF.StateFile(str(tmp_path), 0).take() == dict(list(recs.items())[:2])
    with open(sf.path, "r+b") as f:  # a flipped bit in the first: nothing after it either
        f.seek(SF.HEADER + 5)
        b = f.read(1)
        f.seek(SF.HEADER + 5)
        f.write(bytes([b[0] ^ 1]))
    assert SF.StateFile(str(tmp_path), 0).take() == {}


def test_garbage_and_foreign_files_are_not_believed(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    with open(sf.path, "wb") as f:
        f.write(os.urandom(10 * SF.RECORD))
    assert sf.take() == {}
    sf.sync({V4: 1})
    os.chown(sf.path, 4321, -1)  # (tests run as root)
    assert SF.StateFile(str(tmp_path), 0).take() == {}


def test_close_keeps_what_is_left_or_removes_the_file(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    sf.sync({V4: 1, V6: 2})
    sf.close({V6: 2})
    assert SF.StateFile(str(tmp_path), 0).take() == {V6: 2}
    sf = SF.StateFile(str(tmp_path), 0)
    sf.sync({V4: 1})
    sf.close({})
    assert not os.path.exists(sf.path)


def test_a_directory_that_cannot_be_written_gives_the_file_up_without_raising(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sf = SF.StateFile(str(blocker), 0)
    with caplog.at_level(logging.WARNING, logger="middlebox.run"):
        sf.sync({V4: 1})
        sf.add({V4: 1})
        sf.sync({V4: 1, V6: 2})
        sf.close({V4: 1})
    assert sf.failed and sum("not written from now on" in r.getMessage() for r in caplog.records) == 1
    assert sf.take() == {}


def test_keys_never_reach_the_log(tmp_path, caplog):
    key = 0x0123456789ABCDEF
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.DEBUG):
        SF.StateFile(str(blocker), 0).sync({V4: key})
        SF.StateFile(str(tmp_path), 0).sync({V4: key})
    text = caplog.text.lower()
    assert f"{key:x}" not in text and str(key) not in text


JOIN = (bytes(range(32, 48)), 61000, bytes(range(16)), 443)  # (a v6 subflow of a v4 connection)


def test_extra_subflow_records_round_trip_and_drop(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    sf.sync({V4: 7, JOIN: (V4, 7)})
    assert _read(sf) == {V4: 7, JOIN: (V4, 7)}
    assert os.path.getsize(sf.path) == SF.HEADER + SF.RECORD + SF.JOIN_RECORD
    sf.sync({V4: 7, JOIN: (V4, None)})  # (a changed value: added again)
    assert _read(sf) == {V4: 7, JOIN: (V4, None)}
    sf.sync({V4: 7})
    assert _read(sf) == {V4: 7}
    with open(sf.path, "r+b") as f:  # a torn subflow record: what came before survives
        f.truncate(SF.HEADER + SF.RECORD + SF.JOIN_RECORD - 1)
    assert SF.StateFile(str(tmp_path), 0).take() == {V4: 7}


def test_a_symlink_planted_in_the_directory_is_never_written_through(tmp_path):
    """--state-dir may name a directory others can write (/tmp, a shared one): root must not
    truncate or append to whatever file a planted symlink points at."""
    d = tmp_path / "d"
    d.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    sf = SF.StateFile(str(d), 0)
    os.symlink(victim, f"{sf.path}.{os.getpid()}.tmp")  # the temporary file's name
    sf.sync({V4: 1})
    assert victim.read_bytes() == b"precious\n"
    os.symlink(victim, sf.path + ".x")
    os.replace(sf.path + ".x", sf.path)  # the file itself swapped for a symlink
    sf.sync({V4: 1, V6: 2})
    assert victim.read_bytes() == b"precious\n"


def test_a_directory_others_may_write_is_refused(tmp_path, caplog):
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o777)  # (as /tmp, or a directory made before by someone else)
    sf = SF.StateFile(str(d), 0)
    with caplog.at_level(logging.WARNING, logger="middlebox.run"):
        sf.sync({V4: 1})
        assert sf.take() == {}
    assert not os.path.exists(sf.path) and sf.failed


def test_take_does_not_follow_a_symlink(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    other = tmp_path / "other.flows"
    good = SF.StateFile(str(tmp_path / "e"), 0)
    good.sync({V4: 1})
    os.rename(good.path, other)
    sf = SF.StateFile(str(d), 0)
    os.symlink(other, sf.path)
    assert sf.take() == {}


def test_a_file_given_up_after_a_write_error_does_not_outlive_it(tmp_path, monkeypatch):
    """A write that fails (ENOSPC, EIO) gives the file up; what it holds then goes stale
    (connections that end are not dropped from it, a clean stop did not remove it), and a
    successor would believe those records: reset, on a forged segment, connections that
    reuse their 4-tuples, whatever their numbers. The file must go with the failure."""
    import errno

    sf = SF.StateFile(str(tmp_path), 0)
    sf.sync({V4: 1})
    real = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SF.os, "write", full)
    sf.sync({V4: 1, V6: 2})
    monkeypatch.setattr(SF.os, "write", real)
    assert sf.failed
    sf.close({})  # a clean stop: every connection reset
    assert SF.StateFile(str(tmp_path), 0).take() == {}


import pytest  # noqa: E402


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_records_are_believed_ten_minutes_in_all_not_per_daemon(tmp_path):
    """README: 'records are believed for 10 minutes'. A successor learns its predecessor's
    records at its own start and writes the ones not yet used back into its own file
    (Converter.recorded, close): without a time in the file each restart believed them
    KNOWN_TTL more, never forgotten across restarts less than 10 minutes apart (review)."""
    from middlebox.core import orphans as OR
    from middlebox.core.counters import new_counters

    clock = Clock()
    sf = SF.StateFile(str(tmp_path), 0, clock)
    sf.sync({V4: 7})  # a daemon killed at t = 1000
    seen = []
    for _generation in range(3):  # restarted, cleanly stopped 250 s later, restarted...
        o = OR.Orphans(new_counters())
        sf = SF.StateFile(str(tmp_path), 0, clock)
        o.learn(sf.take(), clock(), 100, sf.stamps)
        sf.sync(o.recorded(clock()))
        seen.append(V4 in o.known)
        clock.t += 250.0
        sf.close(o.recorded(clock()))
    assert seen == [True, True, True]  # 0, 250 and 500 s after the kill
    sf = SF.StateFile(str(tmp_path), 0, clock)
    assert V4 not in sf.take()  # 750 s after the kill


def test_the_header_stamp_follows_a_live_daemon_and_a_kill_starts_the_ten_minutes(tmp_path):
    """A daemon's own connections are as old as its last sync (the header, rewritten in
    place every second), however long ago their records were written."""
    from middlebox.core import orphans as OR
    from middlebox.core.counters import new_counters

    clock = Clock()
    sf = SF.StateFile(str(tmp_path), 0, clock)
    sf.sync({V4: 7})
    for _ in range(3):
        clock.t += 500.0  # the connection lives on: nothing appended, the stamp moves
        sf.sync({V4: 7})
    size = os.path.getsize(sf.path)
    assert size == SF.HEADER + SF.RECORD
    clock.t += 599.0  # killed at the last sync; the successor starts 599 s later
    nxt = SF.StateFile(str(tmp_path), 0, clock)
    o = OR.Orphans(new_counters())
    assert o.learn(nxt.take(), clock(), 100, nxt.stamps) == 1
    assert o.recorded(clock() + 1.5) == {}  # its ten minutes are over a moment later
    clock.t += 2.0
    assert SF.StateFile(str(tmp_path), 0, clock).take() == {}


def test_a_file_from_another_boot_or_without_a_header_is_not_believed(tmp_path):
    sf = SF.StateFile(str(tmp_path), 0)
    sf.sync({V4: 7})
    other = SF.StateFile(str(tmp_path), 0)
    assert other.take() == {V4: 7}
    other = SF.StateFile(str(tmp_path), 0)
    other.boot = bytes(16)  # as after a reboot (a --state-dir that is not tmpfs)
    assert other.take() == {}
    with open(sf.path, "rb") as f:
        data = f.read()
    with open(sf.path, "wb") as f:  # the records of an older version: no header
        f.write(data[SF.HEADER:])
    assert SF.StateFile(str(tmp_path), 0).take() == {}


def test_a_file_renamed_over_by_another_instance_is_rewritten_not_appended_to_void(tmp_path):
    """The daemon opens its state file (take, then a rewrite by rename) in load_core, before
    it binds the queue: a second `middlebox run` on a queue already served fails to bind, but
    has renamed its own copy over the file first. The running daemon then appended to the
    unlinked inode: the file never again named a new connection, and after a kill its
    successor missed every one started since (numbers test only, the peer not fast-closed)."""
    live = SF.StateFile(str(tmp_path), 0)
    live.sync({V4: 1})
    intruder = SF.StateFile(str(tmp_path), 0)  # what a second daemon's open_state does
    intruder.sync(intruder.take())
    live.add({V6: 2})  # a connection that starts converting now
    live.sync({V4: 1, V6: 2})
    assert SF.StateFile(str(tmp_path), 0).take() == {V4: 1, V6: 2}


def test_take_sweeps_the_temporary_files_a_killed_rewrite_left(tmp_path):
    d = tmp_path / "d"
    sf = SF.StateFile(str(d), 0)
    sf.sync({V4: 1})
    left = d / "queue-0.flows.4242.tmp"
    left.write_bytes(b"half")
    other = d / "queue-1.flows.4242.tmp"  # another queue's: not ours to sweep
    other.write_bytes(b"x")
    assert SF.StateFile(str(d), 0).take() == {V4: 1}
    assert not left.exists() and other.exists()
