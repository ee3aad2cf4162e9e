//! ARCHITECTURE.md's module table is the layering, and the code keeps to it: every `crate::` path under `src/`
//! (`use crate::...`, `use crate::{a, b::c}` and inline `crate::x::y`; tests and comments excluded) names a module
//! the importing module's row lists, every listed module is imported, and each row imports only rows above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the library (`pub mod NAME` in lib.rs).
fn modules(root: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches([';', '{', ' ']).to_owned())
        .collect()
}

/// The table's rows in order: (module, what it may import).
fn table(root: &Path, known: &BTreeSet<String>) -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let section = doc.split("\n## Modules\n").nth(1).expect("ARCHITECTURE.md has a Modules section");
    let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    section
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let module = ticked(cells[0]).into_iter().next().unwrap();
            let imports = ticked(cells.last().unwrap()).into_iter().filter(|m| known.contains(m)).collect();
            (module, imports)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines().map(|line| line.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// The crate's top-level modules this code names.
fn imported(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with('$') || code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `$crate::` in macros, or a path like `other_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // `crate::{a, b::{c, d}, e}`: the first name of each element at depth 1.
        let (mut depth, mut start) = (1, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => start = true,
                c if start && (c.is_alphanumeric() || c == '_') => {
                    found.insert(ident(&group[i..]));
                    start = false;
                }
                _ => {}
            }
        }
    }
    found
}

#[test]
fn the_module_table_is_the_code_and_points_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let known = modules(root);
    let rows = table(root, &known);
    let listed: BTreeSet<String> = rows.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(listed, known, "ARCHITECTURE.md's module table has one row per module of lib.rs");

    let mut actual: BTreeMap<String, BTreeSet<String>> = known.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let relative = file.strip_prefix(root.join("src")).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if !known.contains(&module) || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // lib.rs, the binaries, unit tests kept in their own file
        }
        let names = imported(&code(&std::fs::read_to_string(&file).unwrap()));
        let uses = actual.get_mut(&module).unwrap();
        uses.extend(names.into_iter().filter(|m| known.contains(m) && *m != module));
    }

    let mut problems = Vec::new();
    let mut above = BTreeSet::new();
    for (module, may) in &rows {
        let uses = &actual[module];
        for missing in uses.difference(may) {
            problems.push(format!("{module} imports {missing}, which its row does not list"));
        }
        for stale in may.difference(uses) {
            problems.push(format!("{module}'s row lists {stale}, which it does not import"));
        }
        for upward in may.difference(&above) {
            problems.push(format!("{module} imports {upward}, which is not in a row above it"));
        }
        above.insert(module.clone());
    }
    assert!(problems.is_empty(), "ARCHITECTURE.md and the code disagree:\n{}", problems.join("\n"));
}

#[test]
fn imports_are_read_from_every_form_of_path() {
    let names = imported("use crate::a::b;\nuse crate::{c, d::{e, f}, g::h};\nlet x = crate::i::j(); $crate::k!();");
    let expected: BTreeSet<String> = ["a", "c", "d", "g", "i"].map(str::to_owned).into();
    assert_eq!(names, expected);
    assert_eq!(
        code("use crate::a; // crate::b\n/// [`crate::c`]\n#[cfg(test)]\nmod tests { crate::d }"),
        "use crate::a; \n"
    );
}
