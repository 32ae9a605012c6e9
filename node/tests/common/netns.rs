//! Network namespaces a test makes for itself (root only): hosts, links between them,
//! and home networks behind NAT routers, all removed (with whatever still runs in them)
//! when the [`Lab`] is dropped. Names carry the test's process id, so two test binaries
//! never share one.

use std::process::Command;

use archy_harness::Cmd;

/// The namespaces of one test; each is a host with its own network stack.
pub struct Lab {
    tag: String,
    made: Vec<String>,
    links: usize,
}

/// Runs `ip ARGS`, failing the test with what `ip` said.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// An empty lab; `tag` (a few letters) starts every namespace's name.
    pub fn new(tag: &str) -> Self {
        Self {
            tag: format!("{tag}{}", std::process::id() % 100_000),
            made: Vec::new(),
            links: 0,
        }
    }

    /// A new host `name` with its loopback up; returns its namespace's name.
    pub fn host(&mut self, name: &str) -> String {
        let ns = format!("{}{name}", self.tag);
        ip(&["netns", "add", &ns]);
        self.made.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A bridge `name` in `ns` (a switch the hosts plugged into it share).
    pub fn bridge(&self, ns: &str, name: &str) {
        ip(&["-n", ns, "link", "add", name, "type", "bridge"]);
        ip(&["-n", ns, "link", "set", name, "up"]);
    }

    /// A cable from `ns` (interface `ifname`, address `cidr`) into bridge `bridge` of
    /// `bridge_ns`.
    pub fn plug(&mut self, ns: &str, ifname: &str, cidr: &str, bridge_ns: &str, bridge: &str) {
        self.links += 1;
        let peer = format!("p{}", self.links);
        ip(&[
            "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", &peer, "netns",
            bridge_ns,
        ]);
        ip(&[
            "-n", bridge_ns, "link", "set", &peer, "master", bridge, "up",
        ]);
        ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]);
        ip(&["-n", ns, "link", "set", ifname, "up"]);
    }

    /// Runs `program ARGS` in `ns`, failing the test if it fails.
    pub fn run(&self, ns: &str, program: &str, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A NAT router `name`: WAN `wan_cidr` on bridge `bridge` of `bridge_ns`, a LAN
    /// bridge with `lan_cidr`; it forwards what the LAN starts and its answers, nothing
    /// else. `symmetric`: a new source port per destination (`MASQUERADE
    /// --random-fully`), so no hole can be punched through it; else plain MASQUERADE
    /// (endpoint-independent mapping, as most home routers). Returns its namespace.
    pub fn router(
        &mut self,
        name: &str,
        wan_cidr: &str,
        (bridge_ns, bridge): (&str, &str),
        lan_cidr: &str,
        symmetric: bool,
    ) -> String {
        let ns = self.host(name);
        self.plug(&ns, "wan", wan_cidr, bridge_ns, bridge);
        self.bridge(&ns, "lan");
        ip(&["-n", &ns, "addr", "add", lan_cidr, "dev", "lan"]);
        self.run(&ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let rules: [&[&str]; 4] = [
            &["-P", "FORWARD", "DROP"],
            &["-A", "FORWARD", "-i", "lan", "-o", "lan", "-j", "ACCEPT"],
            &["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"],
            &[
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-o",
                "lan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        ];
        for rule in rules {
            self.run(&ns, "iptables", rule);
        }
        let mut nat = vec![
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if symmetric {
            nat.push("--random-fully");
        }
        self.run(&ns, "iptables", &nat);
        ns
    }

    /// A host `name` on `router`'s LAN at `cidr`, routed through `gateway`.
    pub fn home_host(&mut self, name: &str, cidr: &str, router: &str, gateway: &str) -> String {
        let ns = self.host(name);
        self.plug(&ns, "eth0", cidr, router, "lan");
        ip(&["-n", &ns, "route", "add", "default", "via", gateway]);
        ns
    }

    /// Home network `h` (1-9) behind its NAT router `r{h}` (WAN 198.18.0.1{h} on bridge
    /// `br0` of `public`, LAN 192.168.{h}.0/24; `symmetric` as in [`Lab::router`]), with
    /// `hosts` hosts `h{h}n{i}` at 192.168.{h}.(10 + i): their namespaces and IPs.
    pub fn home(
        &mut self,
        public: &str,
        h: u8,
        symmetric: bool,
        hosts: u8,
    ) -> Vec<(String, String)> {
        let router = self.router(
            &format!("r{h}"),
            &format!("198.18.0.1{h}/24"),
            (public, "br0"),
            &format!("192.168.{h}.1/24"),
            symmetric,
        );
        (1..=hosts)
            .map(|i| {
                let ip = format!("192.168.{h}.{}", 10 + i);
                let ns = self.home_host(
                    &format!("h{h}n{i}"),
                    &format!("{ip}/24"),
                    &router,
                    &format!("192.168.{h}.1"),
                );
                (ns, ip)
            })
            .collect()
    }

    /// `archy ARGS` run in `ns`'s network. Through `nsenter`, which changes only the
    /// network namespace: `ip netns exec` mounts a sysfs of its own over `/sys`, which
    /// hides the cgroup file system the process runtime confines apps with.
    pub fn archy(&self, ns: &str, args: &[&str]) -> Cmd {
        Cmd::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(env!("CARGO_BIN_EXE_archy"))
            .args(args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// `None` when this host can build a [`Lab`] (root, `ip`, `iptables`), else why not.
pub fn needs_netns() -> Option<String> {
    needs_netns_and(&[])
}

/// [`needs_netns`], and each of `tools` (a command and the flag that makes it print
/// its version).
pub fn needs_netns_and(tools: &[(&str, &str)]) -> Option<String> {
    super::needs_root().or_else(|| {
        [("ip", "-V"), ("iptables", "--version")]
            .iter()
            .chain(tools)
            .find(|(c, flag)| {
                !Command::new(c)
                    .arg(flag)
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|(c, _)| format!("this test needs {c}"))
    })
}
