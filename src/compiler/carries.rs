//! Whether what a compiler wrote carries a given text (the tree's
//! location), looking into the places where a plain byte search cannot see
//! it: compressed ELF sections (`-gz`, `.zdebug_*`), the members of an
//! archive. Formats that pack or compress bytes in ways not read here
//! (LLVM bitcode, GCC's LTO sections, rustc's dylib metadata, CUDA fat
//! binaries, gzip/zstd/xz data) count as carrying it: the answer must
//! never be a wrong "no".

use object::read::archive::ArchiveFile;
use object::{FileKind, Object, ObjectSection};

/// Magic numbers of data that hides its bytes: LLVM bitcode (raw and in its
/// wrapper), gzip, zstd, xz.
const OPAQUE_MAGIC: &[(&[u8], &str)] = &[
    (b"BC\xC0\xDE", "LLVM bitcode"),
    (b"\xDE\xC0\x17\x0B", "LLVM bitcode"),
    (b"\x1F\x8B", "gzip data"),
    (b"\x28\xB5\x2F\xFD", "zstd data"),
    (b"\xFD7zXZ\0", "xz data"),
];

/// ELF sections whose contents are packed or compressed in a form not read
/// here, by name prefix.
const OPAQUE_SECTIONS: &[&str] = &[
    ".gnu.lto_",
    ".llvmbc",
    ".llvm.lto",
    ".rustc",
    ".nv_fatbin",
    "__nv_relfatbin",
    ".nvFatBinSegment",
];

/// Archives inside archives are not expected from a compiler; one level is
/// read, deeper ones count as opaque.
const MAX_DEPTH: u32 = 2;

/// Where `data` carries one of `texts`, or why it may, if it does or may;
/// `None`: it does not.
pub fn carries(data: &[u8], texts: &[&[u8]]) -> Option<String> {
    carries_at(data, texts, 0)
}

fn carries_at(data: &[u8], texts: &[&[u8]], depth: u32) -> Option<String> {
    if let Some(t) = texts
        .iter()
        .find(|t| memchr::memmem::find(data, t).is_some())
    {
        return Some(format!("contains {}", String::from_utf8_lossy(t)));
    }
    if let Some((_, what)) = OPAQUE_MAGIC.iter().find(|(m, _)| data.starts_with(m)) {
        return Some(format!("is {what}, which cachefs does not read into"));
    }
    match FileKind::parse(data) {
        Ok(FileKind::Archive) => archive(data, texts, depth),
        Ok(FileKind::Elf32 | FileKind::Elf64) => elf(data, texts),
        _ => None,
    }
}

fn archive(data: &[u8], texts: &[&[u8]], depth: u32) -> Option<String> {
    if depth >= MAX_DEPTH {
        return Some("is an archive inside an archive".into());
    }
    let unreadable = |e: object::Error| Some(format!("is an archive cachefs cannot read: {e}"));
    let ar = match ArchiveFile::parse(data) {
        Ok(ar) => ar,
        Err(e) => return unreadable(e),
    };
    for member in ar.members() {
        let member = match member {
            Ok(m) => m,
            Err(e) => return unreadable(e),
        };
        // A thin archive's members are names of other files, already seen.
        let Ok(bytes) = member.data(data) else {
            continue;
        };
        // Members lie at even offsets; the ELF reader wants its headers
        // aligned, which a fresh allocation is (malloc's 16 bytes).
        let aligned;
        let bytes = if bytes.as_ptr().align_offset(8) == 0 {
            bytes
        } else {
            aligned = bytes.to_vec();
            &aligned[..]
        };
        if let Some(why) = carries_at(bytes, texts, depth + 1) {
            let name = String::from_utf8_lossy(member.name());
            return Some(format!("member {name} {why}"));
        }
    }
    None
}

fn elf(data: &[u8], texts: &[&[u8]]) -> Option<String> {
    let file = match object::File::parse(data) {
        Ok(f) => f,
        Err(e) => return Some(format!("is an ELF file cachefs cannot read: {e}")),
    };
    for section in file.sections() {
        let name = section.name().unwrap_or_default();
        if let Some(p) = OPAQUE_SECTIONS.iter().find(|p| name.starts_with(**p)) {
            return Some(format!(
                "has a {p} section, which cachefs does not read into"
            ));
        }
        let compressed = section
            .compressed_file_range()
            .is_ok_and(|r| r.format != object::CompressionFormat::None);
        if !compressed {
            continue;
        }
        let found = match section.uncompressed_data() {
            Ok(bytes) => texts
                .iter()
                .find(|t| memchr::memmem::find(&bytes, t).is_some())
                .map(|t| format!("contains {}", String::from_utf8_lossy(t))),
            Err(e) => Some(format!("cannot be decompressed: {e}")),
        };
        if let Some(why) = found {
            return Some(format!("section {name} (compressed) {why}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_and_opaque_formats() {
        let at: &[&[u8]] = &[b"/a/p"];
        assert!(carries(b"xx /a/p/x.c yy", at).is_some());
        assert!(carries(b"xx /a/q/x.c yy", at).is_none());
        assert!(carries(b"BC\xC0\xDE whatever", at).is_some());
        assert!(carries(b"\x1F\x8B\x08 whatever", at).is_some());
    }
}
