//! The call being served, as the agent knows it, and the answers that end
//! a conversation about it.

use super::stats::Origin;
use crate::compiler::Family;
use crate::protocol::{self, CompileRequest, Response};
use anyhow::Result;
use std::os::unix::net::UnixStream;

/// The call being served, as the request tells it; its family found once.
pub(super) struct Served<'a> {
    pub req: &'a CompileRequest,
    pub family: Family,
    /// Who it counts for.
    pub run: Origin<'a>,
}

pub(super) fn reply(stream: &mut UnixStream, response: Response) -> Result<()> {
    protocol::write_frame(stream, &response)?;
    Ok(())
}

/// Statistics count reasons by kind, without the path that triggered them.
pub(super) fn category(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason)
}
