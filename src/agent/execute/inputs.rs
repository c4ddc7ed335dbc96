//! A remote run's input root: from an earlier compile of the call, or guessed from what
//! compiles by the same compiler read and what the command line names; and what is learnt.

use super::*;

/// What a remote run is given and asked for.
pub(super) struct Plan {
    /// The input root's nodes, by absolute path (the tracer and shim are added to it).
    pub(super) tree: BTreeMap<PathBuf, Node>,
    /// The outputs to ask back, by absolute path, with the mode an earlier compile's output
    /// had (`None`: a new file's usual mode).
    pub(super) outputs: Vec<(PathBuf, Option<u32>)>,
    /// The environment deps of the earlier compile, if any (their variables are sent).
    pub(super) env_deps: Vec<Dep>,
    /// Where the inputs came from, for the log and `explain`.
    pub(super) from: &'static str,
}

/// The most files and bytes a guessed input root takes from one directory (a build
/// directory may hold thousands of unrelated files).
pub(super) const GUESS_FILES: usize = 2000;

pub(super) const GUESS_BYTES: u64 = 64 << 20;

/// What of a directory's files a guessed root takes: sources and headers.
pub(super) const GUESS_EXTENSIONS: [&str; 18] = [
    "h", "hh", "hpp", "hxx", "h++", "inc", "def", "c", "cc", "cpp", "cxx", "c++", "i", "ii", "s",
    "S", "tcc", "ipp",
];

/// The most paths remembered per compiler (its toolchain and what its compiles read).
pub(super) const KNOWN_PATHS: usize = 50_000;

impl Agent {
    /// The most recent stored dep set of `key` that holds here but for file contents,
    /// with its result (for the outputs to ask back).
    pub(super) fn prior(&self, call: &Served, key: &Hash) -> Result<Plan, &'static str> {
        let local = self.store.get_manifest(key).ok().flatten();
        let local = local
            .and_then(|b| Manifest::decode(&b))
            .map(|m| (m, Vec::new()));
        let remote = || self.remote_manifest(key);
        let Some((manifest, inline)) = local.or_else(remote) else {
            return Err("never compiled before: its inputs are learnt here first");
        };
        self.prior_in(call, key, &manifest, &inline).ok_or(
            "what it read changed beyond file contents (a file appeared, a directory was listed)",
        )
    }

    fn prior_in(
        &self,
        call: &Served,
        key: &Hash,
        manifest: &Manifest,
        inline: &[InlineResult],
    ) -> Option<Plan> {
        {
            for stored in &manifest.sets {
                let Ok(set) = set_here(stored, call.root.as_ref()) else {
                    continue;
                };
                if set.deps.iter().any(|d| !sendable(&d.state)) {
                    continue;
                }
                let relaxed = DepSet {
                    deps: set.deps.iter().map(relax).collect(),
                    result: set.result,
                };
                if validate(&relaxed, &self.stat_cache, &call.env).is_err() {
                    continue;
                }
                let Some((result, _)) = self.result_tiered(key, &stored.result, inline) else {
                    continue;
                };
                let result = result_here(&result, call.root.as_ref());
                return Some(plan_of(&set.deps, &result));
            }
        }
        None
    }
}

/// The plan an earlier compile's dep set and result make.
pub(super) fn plan_of(deps: &[Dep], result: &CachedResult) -> Plan {
    let mut tree = BTreeMap::new();
    for dep in deps {
        add_dep(dep, &mut tree);
    }
    let outputs = result
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::File { path, mode, .. } | Output::Depfile { path, mode, .. } => {
                Some((PathBuf::from(OsStr::from_bytes(path)), Some(*mode)))
            }
            _ => None,
        })
        .collect();
    Plan {
        tree,
        outputs,
        env_deps: deps.iter().filter(|d| is_env(&d.state)).cloned().collect(),
        from: "an earlier compile of the call",
    }
}

impl Remote {
    /// A plan for a call no earlier compile of which holds: what compiles by the same
    /// compiler read (its toolchain among it) and the sources and headers of the directories
    /// its command line names; the outputs its command line asks for. `None` before any
    /// compile by that compiler was seen.
    pub(super) fn guess(&self, call: &Served) -> Option<Plan> {
        let req = call.req;
        let mut tree = self.known.lock().unwrap().get(&req.compiler)?.clone();
        let cwd = PathBuf::from(OsStr::from_bytes(&req.cwd));
        tree.extend(self.system_headers(req));
        for dir in crate::compiler::gcc_guess::input_dirs(&req.argv, &cwd) {
            add_dir_files(&dir, &mut tree, true);
        }
        for file in crate::compiler::gcc_guess::input_files(&req.argv, &cwd) {
            if file.is_file() {
                add_with_links(&file, &mut tree);
            }
        }
        let outputs = crate::compiler::gcc_guess::outputs(&req.argv)
            .into_iter()
            .map(|o| (cwd.join(o), None))
            .collect();
        Some(Plan {
            tree,
            outputs,
            env_deps: Vec::new(),
            from: "guessed from compiles by the same compiler and the directories it names",
        })
    }

    /// The headers of the system directories the call's driver searches (asked once per
    /// driver and language with `-E -v`): a whole directory when it is small (gcc's own, the
    /// multiarch one, libstdc++'s), else its direct files.
    fn system_headers(&self, req: &crate::protocol::CompileRequest) -> BTreeMap<PathBuf, Node> {
        use crate::compiler::gcc_guess;
        let cxx = gcc_guess::is_cxx(&req.argv);
        let mut id = req.compiler.clone();
        id.extend_from_slice(if cxx { b" c++" } else { b" c" });
        if let Some(known) = self.headers.lock().unwrap().get(&id) {
            return known.clone();
        }
        let report = std::process::Command::new(OsStr::from_bytes(&req.compiler))
            .args(["-E", "-v", "-x", if cxx { "c++" } else { "c" }, "/dev/null"])
            .env_clear()
            .envs(env::value(&req.env, b"PATH").map(|p| ("PATH", OsStr::from_bytes(p))))
            .stdout(std::process::Stdio::null())
            .output();
        let mut tree = BTreeMap::new();
        if let Ok(out) = report {
            for dir in gcc_guess::search_dirs(&String::from_utf8_lossy(&out.stderr)) {
                add_dir_tree(&dir, &mut tree);
            }
        }
        self.headers.lock().unwrap().insert(id, tree.clone());
        tree
    }

    /// Remembers what a compile by `compiler` read, for `guess`.
    fn learn<'p>(&self, compiler: &[u8], read: impl Iterator<Item = &'p Path>) {
        let mut known = self.known.lock().unwrap();
        let paths = known.entry(compiler.to_vec()).or_default();
        for path in read {
            if paths.len() >= KNOWN_PATHS {
                return;
            }
            add_with_links(path, paths);
        }
    }
}

impl Agent {
    /// After a C/C++ miss here or remotely: its inputs, for a later guess.
    pub(in crate::agent) fn learn_inputs(&self, family: Family, compiler: &[u8], deps: &[Dep]) {
        let Some(remote) = self.executor.as_ref().filter(|_| family == Family::CFamily) else {
            return;
        };
        let files = deps.iter().filter_map(|d| match d.state {
            DepState::File(_) | DepState::Symlink(_) | DepState::Exists(_) => {
                Some(Path::new(OsStr::from_bytes(&d.path)))
            }
            _ => None,
        });
        remote.learn(compiler, files);
        let read = deps.iter().filter(|d| matches!(d.state, DepState::Env(_)));
        (remote.learnt_env.lock().unwrap()).extend(read.map(|d| d.path.clone()));
    }
}

/// A system header directory: all of it when it is within the guess's bounds, else the files
/// directly in it.
pub(super) fn add_dir_tree(dir: &Path, tree: &mut BTreeMap<PathBuf, Node>) {
    let mut found = BTreeMap::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
                if files > GUESS_FILES || bytes > GUESS_BYTES / 4 {
                    // Too big to send whole: its direct files only.
                    return add_dir_files(dir, tree, false);
                }
                add_with_links(&e.path(), &mut found);
            }
        }
    }
    tree.extend(found);
}

/// The sources and headers directly in `dir`, within the guess's bounds.
pub(super) fn add_dir_files(dir: &Path, tree: &mut BTreeMap<PathBuf, Node>, by_extension: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (mut files, mut bytes) = (0, 0);
    for e in entries.flatten() {
        let path = e.path();
        let wanted = !by_extension
            || path
                .extension()
                .is_some_and(|x| GUESS_EXTENSIONS.iter().any(|g| x == OsStr::new(g)));
        let Ok(meta) = e.metadata() else { continue };
        if !wanted || !meta.is_file() {
            continue;
        }
        files += 1;
        bytes += meta.len();
        if files > GUESS_FILES || bytes > GUESS_BYTES {
            return;
        }
        add_with_links(&path, tree);
    }
}

pub(super) fn is_env(state: &DepState) -> bool {
    matches!(
        state,
        DepState::Env(_) | DepState::EnvMatching(_) | DepState::Resolved(_)
    )
}

/// States an input root can reproduce (a search directory's candidates cannot: the
/// compile would see only the candidates it read).
pub(super) fn sendable(state: &DepState) -> bool {
    !matches!(
        state,
        DepState::Candidates { .. } | DepState::Pinned(_) | DepState::Listing(_)
    )
}

/// A dep with a file's content left open: the file must still be a file.
pub(super) fn relax(dep: &Dep) -> Dep {
    match dep.state {
        DepState::File(_) => Dep {
            path: dep.path.clone(),
            state: DepState::Exists(Kind::File),
        },
        _ => dep.clone(),
    }
}

pub(super) fn add_dep(dep: &Dep, tree: &mut BTreeMap<PathBuf, Node>) {
    let path = Path::new(OsStr::from_bytes(&dep.path));
    match &dep.state {
        DepState::File(_) | DepState::Exists(_) | DepState::Symlink(_) => {
            add_with_links(path, tree)
        }
        _ => {}
    }
}

/// `path` and every directory and symlink on the way to it, as they are here.
pub(super) fn add_with_links(path: &Path, tree: &mut BTreeMap<PathBuf, Node>) {
    let mut at = PathBuf::from("/");
    let mut links = 0;
    let mut todo: Vec<PathBuf> = path
        .components()
        .skip(1)
        .map(|c| c.as_os_str().into())
        .collect();
    todo.reverse();
    while let Some(name) = todo.pop() {
        let next = at.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            return;
        };
        if meta.file_type().is_symlink() {
            let Ok(target) = std::fs::read_link(&next) else {
                return;
            };
            tree.insert(next.clone(), Node::Symlink(target.clone()));
            links += 1;
            if links > 40 {
                return;
            }
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            let mut more: Vec<PathBuf> = target
                .components()
                .filter(|c| !matches!(c, std::path::Component::RootDir))
                .map(|c| c.as_os_str().into())
                .collect();
            more.reverse();
            todo.extend(more);
            continue;
        }
        if name.as_os_str() == ".." {
            at.pop();
            continue;
        }
        let node = if meta.is_dir() { Node::Dir } else { Node::File };
        tree.entry(next.clone()).or_insert(node);
        at = next;
    }
}

/// The input root's nodes as the API names them (relative, UTF-8).
pub(super) fn inputs(tree: &BTreeMap<PathBuf, Node>) -> Result<BTreeMap<String, Input>, String> {
    let mut out = BTreeMap::new();
    for (path, node) in tree {
        let input = match node {
            Node::Dir => Input::Dir,
            Node::Symlink(t) => Input::Symlink {
                target: text(t.as_os_str().as_bytes())?,
            },
            Node::File => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("input {}: {e}", path.display()))?;
                if !meta.is_file() {
                    return Err(format!("input {} is not a regular file", path.display()));
                }
                Input::File {
                    local: path.clone(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            }
        };
        out.insert(relative(path)?, input);
    }
    Ok(out)
}

pub(super) fn relative(path: &Path) -> Result<String, String> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    text(rel.as_os_str().as_bytes())
}

pub(super) fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| format!("not UTF-8: {}", String::from_utf8_lossy(bytes)))
}
