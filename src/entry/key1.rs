//! key1: what is known of a call before it runs. It names the manifest of
//! dep sets seen under it (see `manifest`).

use super::location::Root;
use super::FORMAT_VERSION;
use crate::compiler::host_target;
use crate::digest::{field, Hash};
use crate::protocol::CompileRequest;

/// key1 = what is known before the compile runs: the compiler's content, the
/// name it was called by (clang picks its mode from argv[0]), the arguments
/// and the working directory, with the tree root marked (`location`: the
/// same tree elsewhere has the same key1, and its dep sets say whether a
/// result moves); for a compile that targets the host CPU, that CPU's
/// identity. Not the environment: what of it a compile reads is in its dep
/// sets (`env`), so that a variable it never reads costs no hit.
pub fn key1(req: &CompileRequest, compiler_hash: &Hash, root: Option<&Root>) -> Hash {
    let host = host_target::targets_host_cpu(&req.argv)
        .then(|| host_target::host_cpu_identity().unwrap_or_default());
    key1_on(req, compiler_hash, root, host)
}

fn key1_on(
    req: &CompileRequest,
    compiler_hash: &Hash,
    root: Option<&Root>,
    host_cpu: Option<Hash>,
) -> Hash {
    let marked = |text| match root {
        Some(r) => r.mark_text(text),
        None => std::borrow::Cow::Borrowed(text),
    };
    let mut h = blake3::Hasher::new();
    h.update(b"cachefs-key1");
    h.update(&FORMAT_VERSION.to_le_bytes());
    h.update(compiler_hash);
    let argv0 = req.argv.first().map(|a| basename(a)).unwrap_or_default();
    field(&mut h, argv0);
    h.update(&(req.argv.len() as u64).to_le_bytes());
    for a in req.argv.iter().skip(1) {
        field(&mut h, &marked(a));
    }
    field(&mut h, &marked(&req.cwd));
    // `-march=native` and kin: what the compiler sees of the CPU.
    if let Some(cpu) = host_cpu {
        h.update(b"host-cpu");
        h.update(&cpu);
    }
    *h.finalize().as_bytes()
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key1_any(req: &CompileRequest, compiler_hash: &Hash) -> Hash {
        key1(req, compiler_hash, None)
    }

    #[test]
    fn key1_holds_the_tree_root_marked() {
        let h = [7u8; 32];
        let at = |root: &str, cwd: &str, args: &[&str]| {
            let mut r = req(args, &[]);
            r.cwd = cwd.as_bytes().to_vec();
            let root = Root {
                path: root.as_bytes().to_vec(),
                also: Vec::new(),
            };
            key1(&r, &h, Some(&root))
        };
        let a = at("/a/p", "/a/p/src", &["gcc", "-I/a/p/inc", "-c", "x.c"]);
        assert_eq!(
            a,
            at("/b/q", "/b/q/src", &["gcc", "-I/b/q/inc", "-c", "x.c"])
        );
        assert_ne!(
            a,
            at("/b/q", "/b/q/src", &["gcc", "-I/a/p/inc", "-c", "x.c"])
        );
        assert_ne!(a, at("/b/q", "/b/q", &["gcc", "-I/b/q/inc", "-c", "x.c"]));
    }

    fn req(args: &[&str], env: &[(&str, &str)]) -> CompileRequest {
        CompileRequest {
            compiler: b"/usr/bin/gcc".to_vec(),
            argv: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            cwd: b"/src".to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            run_id: None,
        }
    }

    #[test]
    fn key1_ignores_volatile_env_and_argv0_dir() {
        let h = [7u8; 32];
        let a = key1_any(
            &req(
                &["gcc", "-c", "x.c"],
                &[("MAKEFLAGS", "-j2 --jobserver-auth=3,4"), ("CPATH", "/a")],
            ),
            &h,
        );
        let b = key1_any(
            &req(
                &["/usr/bin/gcc", "-c", "x.c"],
                &[
                    ("CPATH", "/a"),
                    ("PWD", "/x"),
                    ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
                    ("XDG_SESSION_ID", "4"),
                    ("GNOME_TERMINAL_SCREEN", "/org/gnome/Terminal/screen/1"),
                ],
            ),
            &h,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn key1_of_a_native_cpu_compile_is_the_cpu_s() {
        let h = [7u8; 32];
        let native = req(&["gcc", "-O2", "-march=native", "-c", "x.c"], &[]);
        let (cpu_a, cpu_b) = (Some([1u8; 32]), Some([2u8; 32]));
        assert_eq!(
            key1_on(&native, &h, None, cpu_a),
            key1_on(&native, &h, None, cpu_a)
        );
        assert_ne!(
            key1_on(&native, &h, None, cpu_a),
            key1_on(&native, &h, None, cpu_b)
        );
        assert_eq!(key1_any(&native, &h), key1_any(&native, &h));
        let generic = req(&["gcc", "-O2", "-c", "x.c"], &[]);
        assert_eq!(key1_any(&generic, &h), key1_on(&generic, &h, None, None));
    }

    #[test]
    fn key1_sees_flags_env_and_argv0_name() {
        let h = [7u8; 32];
        let base = key1_any(&req(&["gcc", "-c", "x.c"], &[]), &h);
        assert_ne!(base, key1_any(&req(&["gcc", "-O2", "-c", "x.c"], &[]), &h));
        // The environment is in the dep sets (`env`), not in key1.
        assert_eq!(
            base,
            key1_any(&req(&["gcc", "-c", "x.c"], &[("CPATH", "/a")]), &h)
        );
        assert_ne!(base, key1_any(&req(&["clang", "-c", "x.c"], &[]), &h));
        assert_ne!(base, key1_any(&req(&["gcc", "-c", "x.c"], &[]), &[8u8; 32]));
        // Argument boundaries matter: "-c x.c" vs "-cx .c" style merges.
        assert_ne!(
            key1_any(&req(&["gcc", "-DA", "B"], &[]), &h),
            key1_any(&req(&["gcc", "-DAB"], &[]), &h)
        );
    }
}
