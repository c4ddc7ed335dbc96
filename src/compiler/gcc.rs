//! gcc and clang argument lists (nvcc shares the stdin rule).

/// Reads its source from stdin: the observation cannot see those bytes.
fn reads_stdin(args: &[Vec<u8>]) -> bool {
    args.iter().any(|a| a == b"-")
}

/// Names a device or a process file (`-o /dev/tty`, `/proc/self/fd/3`):
/// those are not mirrored, so what goes there would not be replayed.
/// `/dev/null` is the exception: nothing written there needs replaying.
fn names_unmirrored_file(args: &[Vec<u8>]) -> bool {
    args.iter().any(|a| {
        let path = a
            .iter()
            .position(|&b| b == b'/')
            .map_or(&a[..0], |i| &a[i..]);
        (path.starts_with(b"/dev/") || path.starts_with(b"/proc/")) && path != b"/dev/null"
    })
}

pub fn uncacheable_reason(args: &[Vec<u8>]) -> Option<&'static str> {
    if reads_stdin(args) {
        return Some("source read from stdin");
    }
    if names_unmirrored_file(args) {
        return Some("reads or writes a device or /proc file");
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

    #[test]
    fn device_outputs_are_uncacheable_except_dev_null() {
        assert!(uncacheable_reason(&v(&["-E", "a.c", "-o", "/dev/tty"])).is_some());
        assert!(uncacheable_reason(&v(&["-E", "a.c", "-o/proc/self/fd/1"])).is_some());
        assert!(uncacheable_reason(&v(&["-c", "a.c", "-o", "/dev/null"])).is_none());
    }
}
