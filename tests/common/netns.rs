//! Network namespaces for tests of compile farms (distcc, icecream): each
//! machine of a farm is a namespace held open by a `sleep` started with
//! `unshare --net`, and two are joined by a veth pair, so that daemons that
//! listen, broadcast or look for a scheduler stay off the host's network.
//! Needs root (CI runs as root); `NetNs::available` says why not otherwise.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub struct NetNs {
    holder: Child,
    /// It has a mount namespace of its own too (`with_own_mounts`).
    own_mounts: bool,
}

impl NetNs {
    /// Why namespaces cannot be made here, or `None` when they can.
    pub fn unavailable() -> Option<&'static str> {
        (!nix_is_root()).then_some(
            "needs root: the farm's daemons run in network namespaces joined by a veth pair \
             (iceccd needs root itself); CI runs as root",
        )
    }

    pub fn new() -> NetNs {
        NetNs::start(false)
    }

    /// A machine with mounts of its own as well (private propagation), for
    /// daemons that insist on fixed paths (iceccd's socket in /run/icecc).
    pub fn with_own_mounts() -> NetNs {
        NetNs::start(true)
    }

    fn start(own_mounts: bool) -> NetNs {
        super::require("unshare");
        super::require("nsenter");
        super::require("ip");
        let mut holder = Command::new("unshare");
        holder.arg("--net");
        if own_mounts {
            holder.args(["--mount", "--propagation", "private"]);
        }
        let holder = holder
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let ns = NetNs { holder, own_mounts };
        // unshare execs sleep once the namespace is made.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while ns.id().is_none_or(|id| id == own) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare --net made no namespace"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ns.sh("ip link set lo up");
        ns
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The namespace's identity (`net:[inode]`).
    fn id(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/ns/net", self.pid())).ok()
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.pid().to_string()).arg("-n");
        if self.own_mounts {
            c.arg("-m");
        }
        c.arg("--");
        c.arg(program);
        c
    }

    /// `sh -c script` inside the namespace; panics on failure.
    pub fn sh(&self, script: &str) -> Output {
        let out = self.command("sh").args(["-c", script]).output().unwrap();
        assert!(
            out.status.success(),
            "`{script}` in the namespace failed: {}",
            super::stderr(&out)
        );
        out
    }

    /// Joins `self` (`10.77.N.1`) and `other` (`10.77.N.2`) by a veth pair;
    /// the two addresses.
    pub fn link(&self, other: &NetNs, n: u8) -> (String, String) {
        let (a, b) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
        self.sh(&format!(
            "ip link add cfs{n}a type veth peer name cfs{n}b netns {}",
            other.pid()
        ));
        self.sh(&format!(
            "ip addr add {a}/24 dev cfs{n}a && ip link set cfs{n}a up"
        ));
        other.sh(&format!(
            "ip addr add {b}/24 dev cfs{n}b && ip link set cfs{n}b up"
        ));
        (a, b)
    }

    /// Whether something listens on TCP `port` inside the namespace.
    pub fn listens(&self, port: u16) -> bool {
        let out = self.sh("ss -Hltn");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|w| w.ends_with(&format!(":{port}")))
    }

    /// Waits (30 s at most) until something listens on `port`.
    pub fn wait_listening(&self, port: u16) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.listens(port) {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing listens on port {port} in the namespace"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILLs every process in the namespace but its holder: the machine
    /// lost, its daemons with it.
    pub fn kill_inside(&self) {
        let Some(id) = self.id() else { return };
        for _ in 0..10 {
            let mut any = false;
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
                if pid as u32 != self.pid() && ns.as_ref() == Some(&id) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    any = true;
                }
            }
            if !any {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.kill_inside();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn nix_is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
