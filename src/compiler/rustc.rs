//! rustc argument lists.

pub fn uncacheable_reason(args: &[Vec<u8>]) -> Option<&'static str> {
    let incremental = args.iter().enumerate().any(|(i, a)| {
        a.starts_with(b"-Cincremental")
            || (a == b"-C"
                && args
                    .get(i + 1)
                    .is_some_and(|n| n.starts_with(b"incremental")))
    });
    if incremental {
        return Some("rustc -C incremental");
    }
    if args.iter().any(|a| a == b"-") {
        return Some("source read from stdin");
    }
    None
}
