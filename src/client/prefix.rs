//! How the prefix command (`compiler::prefix`) is applied: settled once per
//! call from the configuration, found along `PATH`, and put into the
//! compile's environment (`CACHEFS_PREFIX`, resolved) so that the agent
//! knows what the compile ran under. A prefix that cannot be found is left
//! out (the compile runs locally), said once per build.

use super::call::Call;
use super::fallback::warn_once;
use crate::compiler::prefix::{self, Prefix};
use crate::config::{Config, ENV_PREFIX};
use crate::protocol::Finished;

/// The prefix this call runs under when it runs the compiler (a miss, or
/// uncached), with `CACHEFS_PREFIX` set to it or removed.
pub(super) fn settle(call: &Call, config: &Config) -> Option<Prefix> {
    let wanted = config.prefix.as_deref().and_then(Prefix::parse);
    let wanted = wanted.filter(|_| prefix::applies(call.family))?;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    let resolved = wanted.resolved(&path);
    // SAFETY: single-threaded at this point; nothing else reads the environment.
    match &resolved {
        Some(p) => unsafe { std::env::set_var(ENV_PREFIX, p.to_os_string()) },
        None => {
            unsafe { std::env::remove_var(ENV_PREFIX) };
            let reason = format!(
                "the prefix command {} is not found: compiles run without it",
                wanted.program().display()
            );
            warn_once(&reason, Some(config));
        }
    }
    resolved
}

/// The call again without its prefix, to be compiled locally in the same
/// view, when the farm's compile printed something of its own
/// (`compiler::prefix::printed`): what a local compile prints and writes is
/// then the result, never the farm's diagnostics.
pub(super) fn local_rerun(call: &Call, done: &Finished) -> Option<Call> {
    let p = call.prefix.as_ref()?;
    if !prefix::printed(p.tool(), &done.stdout, &done.stderr) {
        return None;
    }
    log::debug!("the farm's compile printed diagnostics: compiling again locally");
    Some(Call {
        compiler: call.compiler.clone(),
        argv: call.argv.clone(),
        family: call.family,
        prefix: None,
    })
}

/// `PREFIX… COMPILER ARGS…`: the compiler by the path the build ran, so
/// that the prefix need not search for it (distcc and icecc take a path).
pub(super) fn command(
    prefix: &Prefix,
    call: &Call,
    argv: &[std::ffi::OsString],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(&prefix.argv[0]);
    cmd.args(&prefix.argv[1..]);
    cmd.arg(&call.compiler);
    cmd.args(argv.iter().skip(1));
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_and_the_agent_name_the_same_variable() {
        assert_eq!(
            crate::config::ENV_PREFIX,
            crate::compiler::prefix::ENV_PREFIX
        );
    }
}
