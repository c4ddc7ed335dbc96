//! What a gcc or clang command line says of the files a compile never observed will read and
//! write: the directories its sources and include options name, and the outputs it asks for.
//! Only a guess, for a remote run's input root (`agent::execute`): the run's trace decides
//! whether the guess held, and a compile it misses runs here.

use std::path::{Path, PathBuf};

/// Options whose value is a directory searched for headers (glued or separate).
const INCLUDE_DIRS: [&str; 5] = ["-I", "-iquote", "-isystem", "-idirafter", "-iprefix"];
/// Options followed by a value that is not an input.
const WITH_VALUE: [&str; 12] = [
    "-o", "-MF", "-MT", "-MQ", "-x", "-include", "-imacros", "-D", "-U", "-L", "-l", "-Xlinker",
];

/// The directories whose files a compile of `argv` in `cwd` may read: each source's, each
/// include option's, and `cwd`.
pub fn input_dirs(argv: &[Vec<u8>], cwd: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![cwd.to_path_buf()];
    let mut args = argv.iter().skip(1).map(|a| String::from_utf8_lossy(a));
    while let Some(arg) = args.next() {
        if let Some(opt) = INCLUDE_DIRS.iter().find(|o| arg.starts_with(**o)) {
            let value = match &arg[opt.len()..] {
                "" => args.next().map(|v| v.into_owned()),
                glued => Some(glued.to_string()),
            };
            dirs.extend(value.map(|v| cwd.join(v)));
            continue;
        }
        if WITH_VALUE.contains(&arg.as_ref()) {
            // `-include FILE`: the file's directory too.
            let value = args.next();
            if arg == "-include" || arg == "-imacros" {
                dirs.extend(
                    value.and_then(|v| cwd.join(v.as_ref()).parent().map(Path::to_path_buf)),
                );
            }
            continue;
        }
        if !arg.starts_with('-') {
            dirs.extend(cwd.join(arg.as_ref()).parent().map(Path::to_path_buf));
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The inputs `argv` names (sources, objects, archives), as paths under `cwd`.
pub fn input_files(argv: &[Vec<u8>], cwd: &Path) -> Vec<PathBuf> {
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    source_args(&args)
        .into_iter()
        .map(|a| cwd.join(a))
        .collect()
}

/// Whether `argv` compiles C++ (by its driver's name or its sources' extensions), for the
/// system header directories to ask the driver about.
pub fn is_cxx(argv: &[Vec<u8>]) -> bool {
    let driver = argv
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let name = driver
        .as_deref()
        .and_then(|d| d.rsplit('/').next())
        .unwrap_or("");
    if name.contains("++") {
        return true;
    }
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    source_args(&args).iter().any(|a| {
        [".cc", ".cpp", ".cxx", ".c++", ".C", ".ii"]
            .iter()
            .any(|x| a.ends_with(x))
    })
}

/// The system header directories a gcc/clang driver searches, from its `-E -v` report (the
/// lines between "search starts here:" and "End of search list.").
pub fn search_dirs(report: &str) -> Vec<PathBuf> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("#include <...> search starts here:"))
        .skip(1)
        .take_while(|l| !l.starts_with("End of search list."))
        .map(|l| PathBuf::from(l.trim().trim_end_matches(" (framework directory)")))
        .collect()
}

/// The files a compile of `argv` writes, relative to its working directory, as far as the
/// command line says: `-o`, the depfile of `-MD`/`-MMD`/`-MF`, and the default names.
pub fn outputs(argv: &[Vec<u8>]) -> Vec<PathBuf> {
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value_of = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .or_else(|| {
                args.iter().find_map(|a| {
                    a.strip_prefix(f)
                        .filter(|v| !v.is_empty())
                        .map(String::from)
                })
            })
    };
    let sources: Vec<&String> = source_args(&args);
    let stops = has("-c") || has("-S") || has("-E");
    let out = value_of("-o").map(PathBuf::from).or_else(|| {
        let ext = if has("-S") { "s" } else { "o" };
        match (stops, sources.first()) {
            (true, Some(src)) if !has("-E") => Path::new(src.as_str())
                .file_name()
                .map(|n| Path::new(n).with_extension(ext)),
            (true, _) => None,
            (false, _) => Some(PathBuf::from("a.out")),
        }
    });
    let mut outs: Vec<PathBuf> = out.iter().cloned().collect();
    if let Some(dep) = value_of("-MF") {
        outs.push(dep.into());
    } else if has("-MD") || has("-MMD") {
        outs.extend(out.map(|o| o.with_extension("d")));
    }
    outs
}

/// The arguments that are inputs (not options, not option values).
fn source_args(args: &[String]) -> Vec<&String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if WITH_VALUE.contains(&a.as_str()) || INCLUDE_DIRS.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn sources_and_include_options_name_their_directories() {
        let dirs = input_dirs(
            &argv("gcc -Iinc -I ../other -isystem/sys -DX=1 -c src/a.c -o obj/a.o"),
            Path::new("/p"),
        );
        let want: Vec<PathBuf> = ["/p", "/p/../other", "/p/inc", "/p/src", "/sys"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn a_link_names_its_objects_and_archives_not_its_output() {
        let files = input_files(
            &argv("gcc -o lua lua.o liblua.a -lm -Wl,-E"),
            Path::new("/p"),
        );
        assert_eq!(
            files,
            [PathBuf::from("/p/lua.o"), PathBuf::from("/p/liblua.a")]
        );
    }

    #[test]
    fn the_drivers_search_list_is_read_and_cxx_is_known() {
        let report = "ignoring nonexistent directory \"/x\"\n#include \"...\" search starts here:\n\
                      #include <...> search starts here:\n /usr/lib/gcc/x86_64-linux-gnu/12/include\n \
                      /usr/include\nEnd of search list.\n";
        let want: Vec<PathBuf> = ["/usr/lib/gcc/x86_64-linux-gnu/12/include", "/usr/include"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(search_dirs(report), want);
        assert!(is_cxx(&argv("g++ -c a.c")));
        assert!(is_cxx(&argv("gcc -c a.cpp")));
        assert!(!is_cxx(&argv("gcc -c a.c")));
    }

    #[test]
    fn outputs_follow_gccs_defaults() {
        assert_eq!(outputs(&argv("gcc -c a.c -o x.o")), [PathBuf::from("x.o")]);
        assert_eq!(outputs(&argv("gcc -c src/a.c")), [PathBuf::from("a.o")]);
        assert_eq!(outputs(&argv("gcc -S a.c")), [PathBuf::from("a.s")]);
        assert_eq!(outputs(&argv("gcc a.o b.o")), [PathBuf::from("a.out")]);
        assert_eq!(
            outputs(&argv("gcc -MMD -c a.c -o o/a.o")),
            [PathBuf::from("o/a.o"), PathBuf::from("o/a.d")]
        );
        assert_eq!(
            outputs(&argv("gcc -MD -MF deps/a.d -c a.c -o a.o")),
            [PathBuf::from("a.o"), PathBuf::from("deps/a.d")]
        );
    }
}
