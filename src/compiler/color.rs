//! Colored diagnostics. On a miss the compiler's stderr is a pipe (it is
//! buffered until the result is stored), so gcc and clang would print plain
//! text even when the build runs at a terminal, and the cached text would be
//! plain forever after. So, as ccache does, gcc/clang compiles run with
//! `-fdiagnostics-color=always` (both accept it), except where it would show
//! in an output (`LEFT_ALONE_WITH`), the
//! colored text is what is stored, and when it is printed the colors are
//! removed unless the compiler would have colored it itself: stderr a
//! terminal and `TERM` neither unset nor `dumb` (gcc's rule for `auto`).

use super::Family;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

pub const ALWAYS: &str = "-fdiagnostics-color=always";

/// Prefixes of arguments with which the flag is not added: those that
/// settle colors or pick a machine format, and those that write the command
/// line somewhere a byte of it would show: gcc streams options into `-flto`
/// objects, clang records them with `-frecord-command-line` (alias
/// `-frecord-gcc-switches`) and `-grecord-command-line`, `-v`/`-###` print
/// them, `-Q --help=` prints option states; and `@file` (unread here).
/// Measured: plain, `-g`, `-g3`, `-S`, `-E`, `-M` and gcc's
/// `-grecord-gcc-switches`/`-frecord-gcc-switches`/`-fverbose-asm` give the
/// same bytes with and without it.
const LEFT_ALONE_WITH: [&[u8]; 16] = [
    b"-fdiagnostics-color",
    b"-fno-diagnostics-color",
    b"-fcolor-diagnostics",
    b"-fno-color-diagnostics",
    b"-fdiagnostics-format",
    b"-flto",
    b"-ffat-lto-objects",
    b"-frecord-",
    b"-grecord-",
    b"-fsave-optimization-record",
    b"-fdump-",
    b"-aux-info",
    b"-Q",
    b"--help",
    b"--verbose",
    b"@",
];

/// Whether to run this call with `ALWAYS` added after argv[0].
pub fn adds_color(family: Family, argv: &[OsString]) -> bool {
    family == Family::CFamily
        && !argv.iter().skip(1).any(|a| {
            let a = a.as_bytes();
            a == b"-v" || a == b"-###" || LEFT_ALONE_WITH.iter().any(|f| a.starts_with(f))
        })
}

/// The call's argv with `ALWAYS` added.
pub fn with_color(argv: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(argv.len() + 1);
    out.extend(argv.first().cloned());
    out.push(ALWAYS.into());
    out.extend(argv.iter().skip(1).cloned());
    out
}

/// Would the compiler itself have colored its diagnostics here?
pub fn terminal_wants_color(stderr_is_tty: bool, term: Option<&[u8]>) -> bool {
    stderr_is_tty && term.is_some_and(|t| !t.is_empty() && t != b"dumb")
}

/// A compiler too old for the flag says so and fails: rerun it without.
pub fn rejected(exit_ok: bool, stderr: &[u8]) -> bool {
    !exit_ok && memchr::memmem::find(stderr, b"diagnostics-color").is_some()
}

/// `text` without SGR and erase-line sequences (`ESC [ … m`, `ESC [ … K`),
/// the only ones gcc and clang emit.
pub fn strip(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == 0x1b && text.get(i + 1) == Some(&b'[') {
            let params = text[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b';')
                .count();
            if matches!(text.get(i + 2 + params), Some(b'm' | b'K')) {
                i += params + 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adds(compiler: &[u8], argv: &[OsString]) -> bool {
        adds_color(crate::compiler::family(compiler), argv)
    }

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn strips_gcc_and_clang_colors_only() {
        let gcc =
            b"\x1b[01m\x1b[Kw.c:1:18:\x1b[m\x1b[K \x1b[01;35m\x1b[Kwarning: \x1b[m\x1b[Kunused";
        assert_eq!(strip(gcc), b"w.c:1:18: warning: unused");
        let clang = b"\x1b[1mw.c:1:18: \x1b[0m\x1b[0;1;35mwarning: \x1b[0m\x1b[1munused\x1b[0m\n";
        assert_eq!(strip(clang), b"w.c:1:18: warning: unused\n");
        let other = b"a \x1b[2J b \x1b[ c \x1b";
        assert_eq!(strip(other), other);
    }

    #[test]
    fn color_is_added_unless_the_build_settled_it() {
        assert!(adds(b"/usr/bin/gcc", &v(&["gcc", "-c", "a.c"])));
        assert!(adds(b"/usr/bin/clang++", &v(&["clang++", "-c", "a.cc"])));
        for settled in [
            "-fno-diagnostics-color",
            "-fdiagnostics-color=never",
            "-fcolor-diagnostics",
            "-fdiagnostics-format=json",
            "-flto=auto",
            "-frecord-command-line",
            "-grecord-command-line",
            "-v",
            "-###",
            "@args.rsp",
        ] {
            assert!(!adds(b"/usr/bin/gcc", &v(&["gcc", settled, "-c", "a.c"])));
        }
        assert!(!adds(b"/usr/bin/rustc", &v(&["rustc", "a.rs"])));
        assert!(!adds(b"/x/nvcc", &v(&["nvcc", "-c", "k.cu"])));
        assert_eq!(
            with_color(&v(&["gcc", "-c", "a.c"])),
            v(&["gcc", ALWAYS, "-c", "a.c"])
        );
    }

    #[test]
    fn an_old_compiler_s_refusal_is_recognised() {
        let gcc48 = b"gcc: error: unrecognized command line option '-fdiagnostics-color=always'\n";
        assert!(rejected(false, gcc48));
        assert!(!rejected(true, gcc48));
        assert!(!rejected(false, b"w.c:1: error: 'nope' undeclared\n"));
    }

    #[test]
    fn only_a_terminal_with_a_real_term_gets_colors() {
        assert!(terminal_wants_color(true, Some(b"xterm-256color")));
        assert!(!terminal_wants_color(true, Some(b"dumb")));
        assert!(!terminal_wants_color(true, None));
        assert!(!terminal_wants_color(false, Some(b"xterm")));
    }
}
