"""libvirt's default network, built in namespaces: the guest sits behind a Linux bridge
`virbr0` (its tap `vnet0` a port of it), the hypervisor routes and masquerades towards its
uplink with libvirt's own iptables rules, and the Linux MPTCP server beyond knows no route to
the guests. The hypervisor is configured the way an operator would: a config file, `rules
install`, `run`. The conversion must work through the NAT.

```
 ns guest                ns hypervisor (mbox)                        ns server
 eth0 10.122.0.10 --veth-- vnet0 ] virbr0 10.122.0.1 | m1.. 10.1.1.1 --veth-- 10.1.1.2
                               (bridge port)           MASQUERADE
```
(libvirt's real default is 192.168.122.0/24; these namespaces use 10.122.0.0/24.)
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import tempfile

import pytest
from pyroute2 import IPRoute, netns

from conftest import PY, QUEUE, BACKENDS, Daemon, Server, download, is_fallback, payload, upload
from middlebox.testbed import Topology, in_netns
from test_outbound import MUST_STAY_ZERO, delta

MB = 1 << 20
MIDDLEBOX = str(pathlib.Path(PY).with_name("middlebox"))
NET, PREFIX = "10.122.0.0/24", 24
BRIDGE_IP, GUEST_IP = "10.122.0.1", "10.122.0.10"

# what libvirt installs for a NAT network (iptables backend, network "default", bridge virbr0)
LIBVIRT_NAT = [
    ["-t", "nat", "-A", "POSTROUTING", "-s", NET, "-d", "224.0.0.0/24", "-j", "RETURN"],
    ["-t", "nat", "-A", "POSTROUTING", "-s", NET, "-d", "255.255.255.255/32", "-j", "RETURN"],
    ["-t", "nat", "-A", "POSTROUTING", "-s", NET, "!", "-d", NET, "-p", "tcp", "-j",
     "MASQUERADE", "--to-ports", "1024-65535"],
    ["-t", "nat", "-A", "POSTROUTING", "-s", NET, "!", "-d", NET, "-p", "udp", "-j",
     "MASQUERADE", "--to-ports", "1024-65535"],
    ["-t", "nat", "-A", "POSTROUTING", "-s", NET, "!", "-d", NET, "-j", "MASQUERADE"],
    ["-A", "FORWARD", "-d", NET, "-o", "virbr0", "-m", "conntrack", "--ctstate",
     "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ["-A", "FORWARD", "-s", NET, "-i", "virbr0", "-j", "ACCEPT"],
    ["-A", "FORWARD", "-i", "virbr0", "-o", "virbr0", "-j", "ACCEPT"],
    ["-A", "FORWARD", "-o", "virbr0", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
    ["-A", "FORWARD", "-i", "virbr0", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
]


class LibvirtDefault(Topology):
    """The reference topology's namespaces and path 1, with the guest side replaced by
    libvirt's default network (bridge, tap port, NAT) and no route back to the guests."""

    def __init__(self) -> None:
        super().__init__(paths=1)
        self.guest_if, self.mbox_guest_if = "eth0", "virbr0"
        self.guest_ip, self.mbox_guest_ip = GUEST_IP, BRIDGE_IP

    def _build(self) -> None:
        for ns in self.namespaces:
            netns.create(ns)
            self._created.append(ns)
        self._sysctls()
        self._veth(self.guest, "eth0", self.mbox, "vnet0")
        p = self.paths[0]
        self._veth(self.mbox, p.mbox_if, self.server, p.server_if)
        with IPRoute(netns=self.guest) as ipr:
            self._up(ipr, "lo")
            idx = self._up(ipr, "eth0")
            self._addr(ipr, idx, GUEST_IP, PREFIX)
            ipr.route("add", dst="0.0.0.0/0", gateway=BRIDGE_IP)
        with IPRoute(netns=self.mbox) as ipr:
            self._up(ipr, "lo")
            ipr.link("add", ifname="virbr0", kind="bridge")
            br = self._up(ipr, "virbr0")
            self._addr(ipr, br, BRIDGE_IP, PREFIX)
            port = ipr.link_lookup(ifname="vnet0")[0]
            ipr.link("set", index=port, master=br)
            ipr.link("set", index=port, state="up")
            idx = self._up(ipr, p.mbox_if)
            self._addr(ipr, idx, p.mbox_ip, 24)
            ipr.route("add", dst="0.0.0.0/0", gateway=p.server_ip)
        with IPRoute(netns=self.server) as ipr:
            self._up(ipr, "lo")
            idx = self._up(ipr, p.server_if)
            self._addr(ipr, idx, p.server_ip, 24)
            # no route to 10.122.0.0/24: only the NAT gets answers back
        for rule in LIBVIRT_NAT:
            self.run(self.mbox, ["iptables", *rule])
        self._wait_links_up_libvirt()
        from pyroute2 import MPTCP

        with in_netns(self.server):
            with MPTCP() as mp:
                mp.limits("set", subflows=self.server_limits[0],
                          add_addr_accepted=self.server_limits[1])

    def _wait_links_up_libvirt(self, timeout: float = 5.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        for ns, names in ((self.guest, ["eth0"]), (self.mbox, ["virbr0", self.paths[0].mbox_if]),
                          (self.server, [self.paths[0].server_if])):
            with IPRoute(netns=ns) as ipr:
                for name in names:
                    while ipr.get_links(ipr.link_lookup(ifname=name)[0])[0].get("operstate") != "UP":
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{name} in {ns} did not come up")
                        time.sleep(0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_libvirt_default_network_converts_through_nat(backend):
    with LibvirtDefault() as t, tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "middlebox.toml")
        pure = os.environ.get("MIDDLEBOX_PURE_PYTHON", "") in ("1", "true", "yes")
        with open(conf, "w") as f:  # what an operator writes: the bridge, nothing else
            f.write(f'queue = {QUEUE}\nguest_iface = ["virbr0"]\n\n[run]\n'
                    f'backend = "{backend}"\nno_fail_open = {"true" if pure else "false"}\n')
        env = {**os.environ, "MIDDLEBOX_CONFIG": conf}  # as if it were /etc/middlebox/middlebox.toml
        r = t.run(t.mbox, [MIDDLEBOX, "config", "check"], env=env)
        assert re.search(r'(?m)^guest_iface +\= \["virbr0"\]  # file$', r.stdout), r.stdout
        r = t.run(t.mbox, [MIDDLEBOX, "rules", "install"], env=env)
        assert "virbr0" in r.stdout, r.stdout + r.stderr
        d = Daemon(t, env={"MIDDLEBOX_CONFIG": conf}).wait_bound()
        srv = Server(t)
        try:
            assert "virbr0(#" in d.output, d.output
            before = t.nstat(t.server)
            data = payload(8 * MB)
            upload(t, srv, data)
            download(t, srv, 8 * MB)
            # the server saw the hypervisor's uplink address (NAT), never the guest's
            with in_netns(t.guest):
                c = socket.create_connection((srv.addr, srv.port), timeout=10)
            c.sendall(b"DOWN 1\n")
            c.recv(1)  # the server now waits for our close: its socket is still there
            ss = t.run(t.server, ["ss", "-Htn", "state", "all", f"sport = :{srv.port}"]).stdout
            c.close()
            assert t.paths[0].mbox_ip in ss and GUEST_IP not in ss, ss
            after = t.nstat(t.server)
            dd = delta(before, after)
            assert dd["MPCapableSYNRX"] >= 3 and dd["MPCapableACKRX"] >= 3, dd
            bad = {k: dd.get(k, 0) for k in MUST_STAY_ZERO if dd.get(k, 0)}
            assert not bad, f"server MIB errors through the NAT: {bad}"
            assert srv.mptcp_flags and not [f for f in srv.mptcp_flags if is_fallback(f)], (
                "a server socket fell back to TCP")
            assert not srv.errors, srv.errors
            # conntrack kept every converted packet valid: libvirt's RELATED,ESTABLISHED rule
            # let the answers in (no REJECT counted on the way to the guest)
            fw = t.run(t.mbox, ["iptables", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
            rejects = [line for line in fw.splitlines() if "REJECT" in line]
            assert rejects and all(int(line.split()[0]) == 0 for line in rejects), fw
        finally:
            srv.close()
            rc, _ = d.stop()
            t.run(t.mbox, [MIDDLEBOX, "rules", "remove"], env=env, check=False)
        assert rc == 0, d.output
        assert "bug in" not in d.output, d.output
