//! Arrows point down (ARCHITECTURE.md): in the operator, the two emulators and the sandbox, no module depends on a
//! sibling module that depends back on it, directly or through other siblings. A cycle between siblings means two
//! rooms that cannot be read, tested or moved apart; the fix is to move what both need to the module that owns it
//! (below both), not to merge them.
//!
//! The test parses each crate's `src/` tree with `syn`, following `mod` declarations from `lib.rs` (production code
//! only: `#[cfg(test)]` items are skipped), resolves every `crate::`, `super::`, `self::` and child-module path (in
//! `use` trees, expressions, types and macro bodies, through `use` re-exports) to the module it names, and checks,
//! for every module, the graph of its child modules: code anywhere under child `a` that names something under child
//! `b` is an edge `a -> b`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path inside a crate: `[]` is the crate root, `["controller", "access"]` is `crate::controller::access`.
type ModPath = Vec<String>;

/// A path found in the code, as written (segments), and the module whose code wrote it.
struct RawRef {
    from: ModPath,
    segments: Vec<String>,
    file: PathBuf,
}

#[derive(Default)]
struct CrateTree {
    modules: BTreeSet<ModPath>,
    /// `use` names per module: (module, name) -> the absolute path the name stands for.
    aliases: BTreeMap<(ModPath, String), Vec<String>>,
    refs: Vec<RawRef>,
}

impl CrateTree {
    fn load(root: &Path) -> CrateTree {
        let mut tree = CrateTree::default();
        tree.load_file(&root.join("lib.rs"), Vec::new(), root.to_path_buf());
        tree
    }

    /// Parses one file of module `module`; `child_dir` is where its non-inline child modules' files live.
    fn load_file(&mut self, file: &Path, module: ModPath, child_dir: PathBuf) {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        self.modules.insert(module.clone());
        let mut collector = Collector { tree: self, module, file: file.to_path_buf(), child_dir, pending: Vec::new() };
        collector.visit_file(&parsed);
        let pending = std::mem::take(&mut collector.pending);
        for (path, module, child_dir) in pending {
            self.load_file(&path, module, child_dir);
        }
    }

    /// The absolute path `segments` (written in `from`) stands for, if it names something in this crate.
    fn resolve(&self, from: &[String], segments: &[String]) -> Option<Vec<String>> {
        self.resolve_within(from, segments, 16)
    }

    fn resolve_within(&self, from: &[String], segments: &[String], depth: usize) -> Option<Vec<String>> {
        let depth = depth.checked_sub(1)?;
        let first = segments.first()?.as_str();
        let path: Vec<String> = match first {
            "crate" => segments[1..].to_vec(),
            "self" => from.iter().chain(&segments[1..]).cloned().collect(),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                if ups > from.len() {
                    return None;
                }
                from[..from.len() - ups].iter().chain(&segments[ups..]).cloned().collect()
            }
            _ => {
                let mut child = from.to_vec();
                child.push(first.to_owned());
                if self.modules.contains(&child) {
                    from.iter().chain(segments).cloned().collect()
                } else {
                    // A name a `use` brought into `from` (anything else is an external crate or a local item).
                    let target = self.aliases.get(&(from.to_vec(), first.to_owned()))?;
                    let written: Vec<String> = target.iter().chain(&segments[1..]).cloned().collect();
                    return self.resolve_within(from, &written, depth);
                }
            }
        };
        // Follow a re-export (`pub use child::Item;` in a parent) to the module that defines the item.
        let module_len = (0..=path.len()).rev().find(|n| self.modules.contains(&path[..*n]))?;
        let module = &path[..module_len];
        match path.get(module_len).and_then(|name| self.aliases.get(&(module.to_vec(), name.clone()))) {
            Some(target) if target.first().map(String::as_str) != Some(path[module_len].as_str()) => {
                let written: Vec<String> = target.iter().chain(&path[module_len + 1..]).cloned().collect();
                self.resolve_within(module, &written, depth).or(Some(path))
            }
            _ => Some(path),
        }
    }

    /// The longest prefix of `path` that is a module.
    fn module_of(&self, path: &[String]) -> ModPath {
        let n = (0..=path.len()).rev().find(|n| self.modules.contains(&path[..*n])).unwrap_or(0);
        path[..n].to_vec()
    }

    /// For every module with children: edges between its children, each with one place that makes it.
    fn sibling_graphs(&self) -> BTreeMap<ModPath, BTreeMap<(String, String), String>> {
        let mut graphs: BTreeMap<ModPath, BTreeMap<(String, String), String>> = BTreeMap::new();
        for r in &self.refs {
            let Some(target) = self.resolve(&r.from, &r.segments) else { continue };
            let to = self.module_of(&target);
            let common = r.from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common >= r.from.len() || common >= to.len() {
                continue; // within one module, or between a module and its own ancestor or descendant
            }
            let parent = to[..common].to_vec();
            let edge = (r.from[common].clone(), to[common].clone());
            let place = format!("{}: {}", r.file.display(), r.segments.join("::"));
            graphs.entry(parent).or_default().entry(edge).or_insert(place);
        }
        graphs
    }
}

struct Collector<'a> {
    tree: &'a mut CrateTree,
    module: ModPath,
    file: PathBuf,
    child_dir: PathBuf,
    /// Child modules in their own files: (file, module, its child_dir), loaded after this file.
    pending: Vec<(PathBuf, ModPath, PathBuf)>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|ident| ident == "test"))
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

impl Collector<'_> {
    fn record(&mut self, segments: Vec<String>) {
        if segments.len() >= 2 || matches!(segments.first().map(String::as_str), Some("crate" | "super" | "self")) {
            self.tree.refs.push(RawRef { from: self.module.clone(), segments, file: self.file.clone() });
        }
    }

    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        let alias = |this: &mut Self, full: Vec<String>, name: String| {
            // Resolved after the whole crate is read: a bare first segment may be a module declared later.
            this.tree.aliases.insert((this.module.clone(), name), full.clone());
            this.record(full);
        };
        match tree {
            syn::UseTree::Path(p) => {
                let mut next = prefix;
                next.push(p.ident.to_string());
                self.use_tree(next, &p.tree);
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let mut full = prefix;
                if name != "self" {
                    full.push(name.clone());
                }
                let name = if name == "self" { full.last().cloned().unwrap_or_default() } else { name };
                alias(self, full, name);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix;
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                alias(self, full, r.rename.to_string());
            }
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix.clone(), item);
                }
            }
        }
    }

    /// Paths in macro bodies (`format!`, `json!`, `tokio::select!`, ...) are tokens, not syntax: find `a::b` runs.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => {
                    self.scan_tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(first) => {
                    let preceded_by_colons =
                        i >= 1 && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
                    let mut segments = vec![first.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)), Some(TokenTree::Ident(next))) =
                        (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if !preceded_by_colons {
                        self.record(segments);
                    }
                    i = j;
                }
                TokenTree::Punct(_) | TokenTree::Literal(_) => i += 1,
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_cfg_test(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let name = m.ident.to_string();
        let mut module = self.module.clone();
        module.push(name.clone());
        self.tree.modules.insert(module.clone());
        match &m.content {
            Some((_, items)) => {
                let outer = std::mem::replace(&mut self.module, module);
                let inner_dir = self.child_dir.join(&name);
                let outer_dir = std::mem::replace(&mut self.child_dir, inner_dir);
                for item in items {
                    self.visit_item(item);
                }
                self.module = outer;
                self.child_dir = outer_dir;
            }
            None => {
                let explicit = m.attrs.iter().find(|a| a.path().is_ident("path")).map(|a| {
                    let syn::Meta::NameValue(nv) = &a.meta else { panic!("#[path] without a value") };
                    let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value else {
                        panic!("#[path] is not a string")
                    };
                    self.file.parent().expect("a file has a directory").join(s.value())
                });
                let file = explicit.unwrap_or_else(|| {
                    let flat = self.child_dir.join(format!("{name}.rs"));
                    if flat.exists() { flat } else { self.child_dir.join(&name).join("mod.rs") }
                });
                let is_dir_module = file.file_name().is_some_and(|f| f == "mod.rs");
                let child_dir = if is_dir_module {
                    file.parent().expect("mod.rs has a directory").to_path_buf()
                } else {
                    file.with_extension("")
                };
                self.pending.push((file, module, child_dir));
            }
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.use_tree(Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            self.record(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.scan_tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // `#[instrument(...)]`, `#[serde(...)]`, `#[path]`: no module dependencies.
    }

    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {
        // `pub(crate)`, `pub(super)`: visibility, not a dependency.
    }
}

/// The graph's strongly connected components with more than one module: their members, and a report naming one
/// shortest cycle (`a -> b -> a`) and every edge inside the component with a place that makes it.
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<(Vec<String>, String)> {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        out.entry(a.as_str()).or_default().insert(b.as_str());
    }
    let reach = |from: &str| -> BTreeMap<String, String> {
        // BFS from `from`: each reached node -> its predecessor.
        let mut pred = BTreeMap::new();
        let mut queue = VecDeque::from([from.to_owned()]);
        while let Some(node) = queue.pop_front() {
            for next in out.get(node.as_str()).into_iter().flatten() {
                if !pred.contains_key(*next) {
                    pred.insert(next.to_string(), node.clone());
                    queue.push_back(next.to_string());
                }
            }
        }
        pred
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    for node in out.keys() {
        if seen.contains(*node) {
            continue;
        }
        let pred = reach(node);
        if !pred.contains_key(*node) {
            continue;
        }
        // Walk back from `node` to itself: the shortest cycle through it.
        let mut cycle = vec![node.to_string()];
        let mut at = pred[*node].clone();
        while at != *node {
            cycle.push(at.clone());
            at = pred[&at].clone();
        }
        cycle.push(node.to_string());
        cycle.reverse();
        let component: Vec<String> = pred.keys().filter(|other| reach(other).contains_key(*node)).cloned().collect();
        seen.extend(component.iter().cloned());
        let places: Vec<String> = edges
            .iter()
            .filter(|((a, b), _)| component.contains(a) && component.contains(b))
            .map(|((a, b), place)| format!("    {a} -> {b}: {place}"))
            .collect();
        let report = format!("{} (component: {})\n{}", cycle.join(" -> "), component.join(", "), places.join("\n"));
        found.push((component, report));
    }
    found
}

/// Cycles known and being worked on: (crate, parent module, the sibling modules they may involve). A cycle among
/// these modules is tolerated; one that reaches any other module fails, and so does an entry whose cycle is gone
/// (remove it). Empty: there is none.
const KNOWN_CYCLES: &[(&str, &str, &[&str])] = &[];

/// Cycles between sibling modules of one crate, each named by its parent module, less the known ones; and the known
/// ones that are gone.
fn crate_cycles(krate: &str) -> Vec<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let src = crates.join(krate).join("src");
    let tree = CrateTree::load(&src);
    assert!(tree.modules.len() > 3, "{krate}: found only {} modules under {}", tree.modules.len(), src.display());
    let mut found = Vec::new();
    let mut known_seen = BTreeSet::new();
    for (parent, edges) in tree.sibling_graphs() {
        let parent = if parent.is_empty() { "crate".to_owned() } else { format!("crate::{}", parent.join("::")) };
        for (component, report) in cycles(&edges) {
            let known = KNOWN_CYCLES.iter().position(|(k, p, members)| {
                *k == krate && *p == parent && component.iter().all(|m| members.contains(&m.as_str()))
            });
            match known {
                Some(i) => {
                    known_seen.insert(i);
                }
                None => found.push(format!("{krate}: in {parent}: {report}")),
            }
        }
    }
    for (i, (k, parent, members)) in KNOWN_CYCLES.iter().enumerate() {
        if *k == krate && !known_seen.contains(&i) {
            found.push(format!(
                "{krate}: the known cycle in {parent} among {members:?} is gone: remove it from KNOWN_CYCLES"
            ));
        }
    }
    found.iter().map(|f| f.replace(&format!("{}/", crates.display()), "")).collect()
}

fn assert_acyclic(krate: &str) {
    let found = crate_cycles(krate);
    assert!(
        found.is_empty(),
        "module cycles (move what both sides need to the module that owns it, below both):\n{}",
        found.join("\n")
    );
}

#[test]
fn operator_modules_have_no_cycles() {
    assert_acyclic("operator");
}

#[test]
fn kube_emulator_modules_have_no_cycles() {
    assert_acyclic("kube-emulator");
}

#[test]
fn arm_simulator_modules_have_no_cycles() {
    assert_acyclic("arm-simulator");
}

#[test]
fn sandbox_modules_have_no_cycles() {
    assert_acyclic("sandbox");
}

/// The checker itself: a cycle through a `super::` path, a re-export and a macro body is found, a tree without one
/// is clean, and test-only code does not count.
#[test]
fn the_checker_finds_a_cycle_and_only_a_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "mod a; mod b; mod c; pub use c::Shared;");
    write("a.rs", "pub fn f() -> String { format!(\"{}\", super::b::G) }");
    write("b.rs", "pub const G: u8 = 1; #[cfg(test)] mod tests { use crate::c::Shared; }");
    write("c.rs", "pub struct Shared; pub fn h() { let _ = crate::a::f(); }");
    let graphs = CrateTree::load(dir.path()).sibling_graphs();
    let root = &graphs[&Vec::new()];
    assert!(root.contains_key(&("a".into(), "b".into())), "{root:?}");
    assert!(cycles(root).is_empty(), "{:?}", cycles(root));

    // b now uses c through the root's re-export, outside tests: a -> b -> c -> a.
    write("b.rs", "pub const G: u8 = 1; pub fn g(_: crate::Shared) {}");
    let graphs = CrateTree::load(dir.path()).sibling_graphs();
    let found = cycles(&graphs[&Vec::new()]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, ["a", "b", "c"], "{found:?}");
    assert!(found[0].1.starts_with("a -> b -> c -> a"), "{found:?}");
}
