//! The call being served, as the agent knows it, and the answers that end
//! a conversation about it.

use super::stats::Origin;
use crate::compiler::Family;
use crate::entry::env::Env;
use crate::entry::location::Root;
use crate::protocol::{self, CompileRequest, Response};
use anyhow::Result;
use std::borrow::Cow;
use std::os::unix::net::UnixStream;

/// The call being served, as the request tells it; its family and tree
/// root found once.
pub(super) struct Served<'a> {
    pub req: &'a CompileRequest,
    pub family: Family,
    /// Who it counts for.
    pub run: Origin<'a>,
    /// The root its key and dep sets are relative to (`entry::location`).
    pub root: Option<Root>,
    /// Its environment as keys compare it: the root marked in values.
    pub env: Cow<'a, Env>,
}

impl<'a> Served<'a> {
    pub fn new(req: &'a CompileRequest, base_dir: Option<&[u8]>) -> Served<'a> {
        let family = crate::compiler::family(&req.compiler);
        let root = Root::of(&req.cwd, &req.env, base_dir);
        let env = match &root {
            Some(r) => r.mark_env(&req.env),
            None => Cow::Borrowed(&req.env[..]),
        };
        Served {
            req,
            family,
            run: Origin {
                run: req.run_id.as_deref(),
                language: crate::compiler::language::language(family, &req.compiler, &req.argv),
            },
            root,
            env,
        }
    }
}

pub(super) fn reply(stream: &mut UnixStream, response: Response) -> Result<()> {
    protocol::write_frame(stream, &response)?;
    Ok(())
}

impl super::Agent {
    /// A miss found uncacheable once its compile was over (a reason of the
    /// compile's own, or a special file it reached): counted under its
    /// family's label and the reason's category, logged with the reason.
    pub(super) fn miss_not_cached(
        &self,
        run: Origin,
        family: Family,
        rec: crate::runlog::CompileRecord,
        reason: &str,
    ) {
        use super::runs::Ended;
        let why = format!(
            "{}{}",
            crate::compiler::stats_label(family),
            category(reason)
        );
        self.stats
            .reclassify_miss(run, super::Outcome::Uncacheable(&why));
        self.runs
            .add(run.run, rec.ended("uncacheable", Some(reason)));
    }
}

/// Statistics count reasons by kind, without the path that triggered them.
pub(super) fn category(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason)
}
