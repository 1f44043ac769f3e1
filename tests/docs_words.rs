//! The docs speak to a user of the product: no ticket numbers ("issue 17"), no work
//! rounds ("round three") and no internal guide names in README.md, SECURITY.md,
//! CONTRIBUTING.md, CHANGELOG.md or docs/.

use std::path::{Path, PathBuf};

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = [
        "README.md",
        "SECURITY.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    let dir = std::fs::read_dir(root.join("docs")).expect("docs/");
    files.extend(
        dir.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    files
}

/// Development-process words in `line`, lower-cased.
fn process_words(line: &str) -> Vec<String> {
    let lower = line.to_lowercase();
    let mut found: Vec<String> = ["round two", "round three", "seed guide"]
        .iter()
        .filter(|w| lower.contains(*w))
        .map(|w| w.to_string())
        .collect();
    for (i, _) in lower.match_indices("issue ") {
        if lower[i + 6..].starts_with(|c: char| c.is_ascii_digit()) {
            found.push(lower[i..].chars().take(9).collect());
        }
    }
    found
}

#[test]
fn docs_have_no_development_process_words() {
    let mut hits = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).expect("read doc");
        for (n, line) in text.lines().enumerate() {
            for word in process_words(line) {
                hits.push(format!("{}:{}: {word}", file.display(), n + 1));
            }
        }
    }
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

#[test]
fn the_check_sees_what_it_looks_for() {
    assert_eq!(process_words("as issue 17 asked"), ["issue 17 "]);
    assert_eq!(process_words("Round Three's run"), ["round three"]);
    assert!(process_words("an issue of timing, round trips").is_empty());
}
