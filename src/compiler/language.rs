//! Which language a compile is, for the per-language rows of `cachefs stats`:
//! from the compiler's family and name, `-x`, and the source extensions.
//! Archive steps (`ar`, `ranlib`) have a row of their own.

use super::Family;

pub const C: &str = "C";
pub const CXX: &str = "C++";
pub const RUST: &str = "Rust";
pub const CUDA: &str = "CUDA";
pub const ARCHIVE: &str = "archive";

pub fn language(family: Family, compiler: &[u8], argv: &[Vec<u8>]) -> &'static str {
    match family {
        Family::Rustc => return RUST,
        Family::Nvcc => return CUDA,
        Family::Archiver => return ARCHIVE,
        Family::CFamily => {}
    }
    let args = argv.get(1..).unwrap_or_default();
    if let Some(lang) = from_dash_x(args).or_else(|| from_sources(args)) {
        return lang;
    }
    let name = compiler.rsplit(|&b| b == b'/').next().unwrap_or(compiler);
    if name.windows(2).any(|w| w == b"++") {
        CXX
    } else {
        C
    }
}

/// The first `-x LANG` / `-xLANG` that names a language we count.
fn from_dash_x(args: &[Vec<u8>]) -> Option<&'static str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let lang = if a.as_slice() == b"-x" {
            it.next().map(Vec::as_slice)
        } else {
            a.strip_prefix(b"-x")
        };
        match lang {
            Some(b"c++" | b"c++-header" | b"objective-c++") => return Some(CXX),
            Some(b"cuda") => return Some(CUDA),
            Some(b"c" | b"c-header" | b"objective-c") => return Some(C),
            _ => {}
        }
    }
    None
}

fn from_sources(args: &[Vec<u8>]) -> Option<&'static str> {
    args.iter().filter(|a| !a.starts_with(b"-")).find_map(|a| {
        match a.rsplit(|&b| b == b'.').next()? {
            b"cu" => Some(CUDA),
            b"cc" | b"cpp" | b"cxx" | b"c++" | b"C" | b"CPP" | b"mm" | b"hpp" | b"hh" => Some(CXX),
            b"c" | b"m" => Some(C),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(compiler: &str, args: &[&str]) -> &'static str {
        let argv: Vec<Vec<u8>> = std::iter::once(compiler)
            .chain(args.iter().copied())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        language(
            super::super::family(compiler.as_bytes()),
            compiler.as_bytes(),
            &argv,
        )
    }

    #[test]
    fn classifies_by_family_flag_extension_and_name() {
        assert_eq!(lang("/usr/bin/gcc", &["-c", "x.c"]), C);
        assert_eq!(lang("/usr/bin/gcc", &["-c", "x.cpp"]), CXX);
        assert_eq!(lang("/usr/bin/gcc", &["-x", "c++", "-c", "x.h"]), CXX);
        assert_eq!(lang("/usr/bin/clang", &["-c", "k.cu"]), CUDA);
        assert_eq!(lang("/usr/bin/g++-12", &["x.o", "-o", "prog"]), CXX);
        assert_eq!(lang("/usr/bin/cc", &["x.o", "-o", "prog"]), C);
        assert_eq!(lang("/usr/local/cuda/bin/nvcc", &["-c", "k.cu"]), CUDA);
        assert_eq!(lang("/root/.cargo/bin/rustc", &["--crate-name", "x"]), RUST);
    }
}
