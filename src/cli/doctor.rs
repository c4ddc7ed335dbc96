//! `cachefs doctor`: checks each thing cachefs needs, says what to fix, and
//! exits non-zero when something is broken.

use crate::client::{request, start_agent};
use crate::config::Config;
use crate::protocol::{Request, Response};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// One check's verdict: Ok(what was found) or Err((what is wrong, how to fix it)).
type Verdict = Result<String, (String, String)>;

pub fn doctor() -> i32 {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            report(
                "config",
                Err((e.to_string(), "fix the file or variable named above".into())),
            );
            return 1;
        }
    };
    let mut broken = 0;
    let mut check = |name: &str, verdict: Verdict| {
        broken += usize::from(verdict.is_err());
        report(name, verdict);
    };
    check(
        "config",
        Ok(format!("cache directory {}", config.dir.display())),
    );
    check("/dev/fuse", dev_fuse());
    if !nix::unistd::geteuid().is_root() {
        check("user namespaces", user_namespaces());
    }
    check("preload shim", shim(&config));
    let agent = start_agent(&config).map_err(|e| {
        (
            format!("{e:#}"),
            format!(
                "read {} and check the cache directory is writable",
                config.dir.join("agent.log").display()
            ),
        )
    });
    let agent_up = agent.is_ok();
    check("agent", agent.map(|pid| format!("pid {pid}, answering")));
    if agent_up {
        let (store, mount) = store_and_mount(&config);
        check("store", store);
        check("FUSE mount", mount);
        check("shared cache", remote_tier(&config));
        for (name, verdict) in remote_round_trips(&config) {
            check(&name, verdict);
        }
    }
    check("cachefs mounts", super::mount::mounts_verdict(&config));
    check("archives", archives());
    if broken == 0 {
        println!("everything works");
        0
    } else {
        println!("{broken} problem(s): compiles will run uncached until they are fixed");
        1
    }
}

fn report(name: &str, verdict: Verdict) {
    match verdict {
        Ok(found) => println!("ok    {name:<16} {found}"),
        Err((wrong, fix)) => {
            println!("FAIL  {name:<16} {wrong}");
            println!("      {:<16} fix: {fix}", "");
        }
    }
}

/// Whether `ar` and `ranlib` calls can be cached here: only when `ar`
/// writes deterministic archives by default (see `compiler::archiver`).
/// Never a failure: archive steps then run uncached, compiles are cached.
fn archives() -> Verdict {
    if crate::config::switch_set(crate::config::ENV_NO_ARCHIVES) {
        return Ok(format!(
            "{} is set: ar and ranlib run uncached",
            crate::config::ENV_NO_ARCHIVES
        ));
    }
    let dir = std::env::temp_dir().join(format!("cachefs-doctor-{}", std::process::id()));
    let tried = std::fs::create_dir_all(&dir)
        .ok()
        .and_then(|()| crate::compiler::archiver::try_ar(&dir, "rc"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(match tried {
        None => "no working ar on PATH".into(),
        Some(false) => "ar writes deterministic archives: ar and ranlib are cached".into(),
        Some(true) => "ar stores timestamps by default (U mode): archive steps run uncached; add D to the ar flags to cache them".into(),
    })
}

fn dev_fuse() -> Verdict {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(|_| "present and openable".to_string())
        .map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "let this user read and write /dev/fuse (`chmod 0666 /dev/fuse`, as Debian's fuse3 \
                 package sets it)"
            } else {
                "load the fuse module (`modprobe fuse`); in a container, pass --device /dev/fuse \
                 (and --cap-add SYS_ADMIN)"
            };
            (format!("cannot open /dev/fuse: {e}"), fix.into())
        })
}

/// Each observed compile runs in its own mount namespace; as an ordinary user
/// that needs an unprivileged user namespace. Tried in a child process.
fn user_namespaces() -> Verdict {
    let mut cmd = Command::new("/bin/true");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: unshare is a plain syscall, fine between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    match cmd.status() {
        Ok(s) if s.success() => Ok("unprivileged user namespaces work".into()),
        Ok(s) => Err((format!("test process failed: {s}"), userns_fix())),
        Err(e) => Err((format!("cannot create a user namespace: {e}"), userns_fix())),
    }
}

fn userns_fix() -> String {
    "enable unprivileged user namespaces: `sysctl kernel.unprivileged_userns_clone=1` \
     (Debian) or `sysctl kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu)"
        .into()
}

fn shim(config: &Config) -> Verdict {
    let exe = std::env::current_exe().map_err(|e| {
        (
            format!("cannot find the cachefs executable: {e}"),
            "run cachefs by its path".into(),
        )
    })?;
    super::run::find_shim(&exe, &config.dir)
        .map(|p| p.display().to_string())
        .map_err(|e| {
            (
                format!("{e:#}"),
                "reinstall with scripts/install.sh, or make the cache directory writable".into(),
            )
        })
}

/// The store is opened by the agent: its stats say whether it works, and
/// whether the agent could mount its FUSE mirror.
fn store_and_mount(config: &Config) -> (Verdict, Verdict) {
    let report = match request(config, &Request::Stats { zero: false }) {
        Ok(Response::Stats(r)) => r,
        Ok(other) => {
            let e = (
                format!("unexpected reply {other:?}"),
                "stop and restart the agent: `cachefs stop`".to_string(),
            );
            return (Err(e.clone()), Err(e));
        }
        Err(e) => {
            let e = (
                format!("{e:#}"),
                format!("see {}", config.dir.join("agent.log").display()),
            );
            return (Err(e.clone()), Err(e));
        }
    };
    let store = Ok(format!(
        "{} results, {} of {} bytes",
        report.entries, report.bytes, report.limit
    ));
    let mount = if report.observation.starts_with("unavailable") {
        Err((
            report.observation.clone(),
            "as an ordinary user install fuse3 (fusermount3); check /dev/fuse above; a \
             directory for the mounts named above must be this user's (or set XDG_RUNTIME_DIR); \
             then `cachefs stop` so the next agent mounts again"
                .into(),
        ))
    } else {
        Ok(report.observation.clone())
    };
    (store, mount)
}

/// Each configured tier, tried from here: a write and a read-back of a probe item (a read
/// alone when the tier is read-only). Settings the agent could not use are the
/// "shared cache" check's to report.
fn remote_round_trips(config: &Config) -> Vec<(String, Verdict)> {
    let Ok(Some(remote)) = config
        .remote()
        .map_err(|e| e.to_string())
        .and_then(|c| c.open().map_err(|e| e.to_string()))
    else {
        return Vec::new();
    };
    let fix = "check the endpoint, the bucket or server and the credentials named above; \
               builds go on without this tier";
    // The verdicts below say what a tier's log line would: not twice.
    log::set_max_level(log::LevelFilter::Error);
    remote
        .tiers()
        .map(|(tier, read_only)| {
            let servers: Vec<String> = tier.health().into_iter().map(|h| h.server).collect();
            let place = servers.join(", ");
            let (route, key) = ("doctor", format!("cachefs-doctor-{}", std::process::id()));
            let probe = format!("cachefs doctor probe {key}").into_bytes();
            let verdict = if read_only {
                tier.get(route, &key)
                    .map(|_| format!("{place}: reachable (read-only)"))
            } else {
                tier.set(route, &key, &probe)
                    .and_then(|()| tier.get(route, &key))
                    .map(|back| {
                        let _ = tier.delete(route, &key);
                        if back.as_deref() == Some(&probe[..]) {
                            format!("{place}: written and read back")
                        } else {
                            format!("{place}: written, but read back differently")
                        }
                    })
            };
            let verdict = match verdict {
                Ok(v) if v.ends_with("differently") => Err((v, fix.to_string())),
                Ok(v) => Ok(v),
                Err(e) => Err((e.to_string(), fix.to_string())),
            };
            (format!("tier {}", tier.kind()), verdict)
        })
        .collect()
}

/// The shared tier as the agent sees it: configured but not in use, or a
/// server that keeps failing, is a problem; no shared tier at all is fine.
fn remote_tier(config: &Config) -> Verdict {
    let configured = config.remote_configured();
    let report = match request(config, &Request::Stats { zero: false }) {
        Ok(Response::Stats(r)) => r,
        _ => {
            return Err((
                "the agent did not answer".into(),
                "`cachefs stop`, then retry".into(),
            ))
        }
    };
    let Some(remote) = report.remote else {
        return if configured {
            Err((
                "configured but not in use".into(),
                format!(
                    "read the \"shared cache disabled\" line in {}, fix the setting, then `cachefs stop`",
                    config.dir.join("agent.log").display()
                ),
            ))
        } else {
            Ok("none configured (local cache only)".into())
        };
    };
    let failing: Vec<String> = remote
        .servers
        .iter()
        .filter(|s| !s.healthy)
        .map(|s| format!("{}: {}", s.server, s.last_error.clone().unwrap_or_default()))
        .collect();
    if failing.is_empty() {
        let servers: Vec<&str> = remote.servers.iter().map(|s| s.server.as_str()).collect();
        Ok(format!("{} at {}", remote.tier, servers.join(", ")))
    } else {
        Err((
            format!("{} failing: {}", remote.tier, failing.join("; ")),
            "check that the server runs and is reachable from here; builds go on without it".into(),
        ))
    }
}
