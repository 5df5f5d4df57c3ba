//! The Markdown pages (README.md, CONTRIBUTING.md, docs/, ...) point at what exists: every
//! relative link leads to a file or directory of the repository, and to a heading there when
//! it names one; a code block that names its file (` ```js file=PATH `) is a run of that file's
//! lines, as they are. The files the pages link under `clients/` are run by `clients.rs`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// A relative link of a Markdown page, as written.
pub struct Link {
    /// The page, relative to the repository root.
    pub page: PathBuf,
    /// Its line, from 1.
    pub line: usize,
    /// The path it names, relative to the repository root (the page itself for `#anchor`).
    pub path: PathBuf,
    /// The heading it names, without `#`.
    pub anchor: Option<String>,
}

/// A fenced code block of a Markdown page.
struct CodeBlock {
    line: usize,
    info: String,
    lines: Vec<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.md` of the repository, relative to its root; build output, dependencies and
/// hidden directories left out.
pub fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            if entry.file_type().unwrap().is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, found);
                }
            } else if name.ends_with(".md") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new(""), &mut found);
    found.sort();
    found
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fenced = false;
    text.lines().enumerate().filter_map(move |(i, line)| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return None;
        }
        (!fenced).then_some((i + 1, line))
    })
}

/// The fenced code blocks of `text`, their lines without the fence's indentation.
fn code_blocks(text: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, CodeBlock)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None if trimmed.starts_with("```") => {
                let block = CodeBlock { line: i + 1, info: trimmed[3..].trim().to_owned(), lines: Vec::new() };
                open = Some((line.len() - trimmed.len(), block));
            }
            None => {}
            Some((_, block)) if trimmed.starts_with("```") => blocks.push(block),
            Some((indent, mut block)) => {
                block.lines.push(line.get(indent..).unwrap_or("").to_owned());
                open = Some((indent, block));
            }
        }
    }
    blocks
}

/// The relative links (`[text](target)`) of `page`, outside code blocks.
pub fn links_of(page: &Path) -> Vec<Link> {
    let text = std::fs::read_to_string(root().join(page)).unwrap();
    let dir = page.parent().unwrap_or(Path::new(""));
    let mut links = Vec::new();
    for (line, content) in prose(&text) {
        for (start, _) in content.match_indices("](") {
            let rest = &content[start + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor.to_owned())),
                None => (target, None),
            };
            let path = if path.is_empty() { page.to_owned() } else { normalize(&dir.join(path)) };
            links.push(Link { page: page.to_owned(), line, path, anchor });
        }
    }
    links
}

/// Every relative link of every page.
pub fn all_links() -> Vec<Link> {
    pages().iter().flat_map(|page| links_of(page)).collect()
}

/// `a/b/../c` as `a/c`, without touching the file system. A path above the root fails.
fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                assert!(parts.pop().is_some(), "{} leads out of the repository", path.display());
            }
            std::path::Component::CurDir => {}
            other => parts.push(other.as_os_str()),
        }
    }
    parts.iter().collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings; a repeated heading gets `-1`, `-2`, ... as on GitHub.
fn anchors(text: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for (_, line) in prose(text) {
        let Some(heading) = line.strip_prefix('#') else { continue };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while !found.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    found
}

/// What is wrong with `link`, if anything.
fn broken(link: &Link) -> Option<String> {
    let target = root().join(&link.path);
    if !target.exists() {
        return Some(format!("{} does not exist", link.path.display()));
    }
    let anchor = link.anchor.as_deref()?;
    if link.path.extension().is_none_or(|e| e != "md") {
        return Some(format!("#{anchor} on {}, which is not a Markdown page", link.path.display()));
    }
    let text = std::fs::read_to_string(&target).unwrap();
    (!anchors(&text).contains(anchor)).then(|| format!("{} has no heading #{anchor}", link.path.display()))
}

#[test]
fn github_anchors_are_computed_as_github_computes_them() {
    for (heading, anchor) in [
        ("Quick start", "quick-start"),
        ("`POST /v1/login`", "post-v1login"),
        ("`POST /v1/dev/open-data` (dev mode only)", "post-v1devopen-data-dev-mode-only"),
        ("`GET /docs`, `GET /openapi.json`", "get-docs-get-openapijson"),
        ("Phone number and profile (open data)", "phone-number-and-profile-open-data"),
        ("Logs, signals, shutdown", "logs-signals-shutdown"),
        ("keys/ — the signing key ring", "keys--the-signing-key-ring"),
    ] {
        assert_eq!(slug(heading), anchor, "{heading}");
    }
    let repeated = anchors("# Notes\n```sh\n# not a heading\n```\n## Notes\n#hashtag\n");
    assert_eq!(repeated, HashSet::from(["notes".to_owned(), "notes-1".to_owned()]));
}

#[test]
fn every_relative_link_of_the_markdown_pages_leads_to_a_file_and_heading_that_exist() {
    let links = all_links();
    assert!(links.len() > 50, "found only {} links: is the parser broken?", links.len());
    let broken: Vec<String> = links
        .iter()
        .filter_map(|link| broken(link).map(|why| format!("{}:{}: {why}", link.page.display(), link.line)))
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_code_block_that_names_its_file_shows_that_file_as_it_is() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(root().join(&page)).unwrap();
        for block in code_blocks(&text) {
            let Some(file) = block.info.split_whitespace().find_map(|word| word.strip_prefix("file=")) else {
                continue;
            };
            let shown = format!("{}:{} shows {file}", page.display(), block.line);
            let source = std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{shown}: {e}"));
            let source: Vec<&str> = source.lines().collect();
            assert!(
                !block.lines.is_empty() && source.windows(block.lines.len()).any(|run| run == block.lines),
                "{shown}, but its lines are not a run of that file's lines: copy them in again"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no code block names its file: the check has nothing to check");
}

/// Every source file: a row of its own in CONTRIBUTING.md's module map, or named (`name.rs`)
/// in the row of its directory's `mod.rs`. A newcomer finds each file's job there, and a
/// file added or moved without saying so fails here.
#[test]
fn the_module_map_in_contributing_names_every_source_file() {
    let map = std::fs::read_to_string(root().join("CONTRIBUTING.md")).unwrap();
    let rows: Vec<(&str, &str)> =
        map.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split_once("` |")).collect();
    let mut missing = Vec::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let file = path.strip_prefix(root().join("src")).unwrap().display().to_string();
            let name = format!("`{}`", path.file_name().unwrap().to_str().unwrap());
            let parent_row = file.rsplit_once('/').map(|(dir, _)| format!("{dir}/mod.rs"));
            let listed = rows
                .iter()
                .any(|(row, text)| *row == file || (Some(*row) == parent_row.as_deref() && text.contains(&name)));
            if !listed {
                missing.push(file);
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "CONTRIBUTING.md's module map does not name: {missing:?}");
}
