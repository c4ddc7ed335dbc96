//! gcc and clang argument lists (nvcc shares the stdin rule). Paths outside
//! the observed tree (`-o /dev/tty`) are `observe::coverage`'s.

/// Reads its source from stdin: the observation cannot see those bytes.
fn reads_stdin(args: &[Vec<u8>]) -> bool {
    args.iter().any(|a| a == b"-")
}

pub fn uncacheable_reason(args: &[Vec<u8>]) -> Option<&'static str> {
    if reads_stdin(args) {
        return Some("source read from stdin");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn stdin_source_is_uncacheable() {
        assert!(uncacheable_reason(&v(&["-x", "c", "-c", "-", "-o", "a.o"])).is_some());
        assert!(uncacheable_reason(&v(&["-c", "a.c", "-o", "a.o"])).is_none());
    }
}
