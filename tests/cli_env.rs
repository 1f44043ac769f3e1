//! One naming rule for environment variables, checked on the real clap definitions so
//! that every flag, including flags added later, follows it: a flag of `wsdrain proxy`
//! (what pod specs set) has the twin `WSDRAIN_<FLAG_NAME>`, a flag of any other verb
//! `WSDRAIN_<VERB>_<FLAG_NAME>`. The README's tables list them, and where the README and
//! `--help` say the same thing (defaults, endpoints, how values are spread) they agree.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use clap::Arg;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

/// The part of `text` from the line `heading` up to the next heading of the same level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let level = heading.split(' ').next().unwrap_or("##");
    let body = &text[start + heading.len() + 2..];
    let end = body
        .match_indices(&format!("\n{level} "))
        .map(|(i, _)| i)
        .next()
        .unwrap_or(body.len());
    &body[..end]
}

/// The backticked words of `cell` that are long flags (`--name`), without the dashes.
fn flags_in(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split([' ', '=']).next().unwrap_or(w).to_string())
        .collect()
}

/// The verbs, each with its flags (those with a long name).
fn verbs() -> Vec<(String, Vec<Arg>)> {
    wsdrain::cli::command()
        .get_subcommands()
        .map(|s| {
            let args = s
                .get_arguments()
                .filter(|a| a.get_long().is_some())
                .cloned()
                .collect();
            (s.get_name().to_string(), args)
        })
        .collect()
}

fn env_of(arg: &Arg) -> Option<String> {
    arg.get_env().map(|e| e.to_string_lossy().into_owned())
}

fn rule(verb: &str, long: &str) -> String {
    let flag = long.replace('-', "_").to_ascii_uppercase();
    if verb == "proxy" {
        format!("WSDRAIN_{flag}")
    } else {
        format!("WSDRAIN_{}_{flag}", verb.to_ascii_uppercase())
    }
}

#[test]
fn every_flag_has_the_env_name_of_the_rule() {
    let mut wrong = Vec::new();
    for (verb, args) in verbs() {
        for arg in args {
            let long = arg.get_long().unwrap_or_default();
            let expected = rule(&verb, long);
            if env_of(&arg).as_deref() != Some(expected.as_str()) {
                wrong.push(format!(
                    "wsdrain {verb} --{long}: {:?}, want {expected}",
                    env_of(&arg)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_environment_variable_means_two_things() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (verb, args) in verbs() {
        for arg in args {
            let Some(env) = env_of(&arg) else { continue };
            let owner = format!("wsdrain {verb} --{}", arg.get_long().unwrap_or_default());
            if let Some(other) = seen.insert(env.clone(), owner.clone()) {
                panic!("{env} is both {other} and {owner}");
            }
        }
    }
}

/// The flags shared by `inject` and `webhook` (documented in docs/inject.md).
fn injection_defaults() -> Vec<String> {
    use clap::Args;
    wsdrain::cli::InjectDefaults::augment_args(clap::Command::new("defaults"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

#[test]
fn the_readme_env_table_lists_every_verb_and_flag() {
    let readme = read("README.md");
    let table = section(&readme, "### Environment variables");
    let defaults = injection_defaults();
    let inject_doc = read("docs/inject.md");
    let inject_flags = flags_in(section(&inject_doc, "### Flags"));
    let proxy_table = section(&readme, "### `wsdrain proxy` flags");
    let mut missing = Vec::new();
    for (verb, args) in verbs() {
        if verb == "version" {
            continue;
        }
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `wsdrain {verb}` |")))
            .unwrap_or_else(|| panic!("README's environment table has no row for {verb}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let prefix = if verb == "proxy" {
            "`WSDRAIN_`".to_string()
        } else {
            format!("`WSDRAIN_{}_`", verb.to_ascii_uppercase())
        };
        assert_eq!(cells[2], prefix, "prefix of {verb}");
        let listed = flags_in(cells[3]);
        for arg in args {
            let long = arg.get_long().unwrap_or_default().to_string();
            let documented = if verb == "proxy" {
                proxy_table.contains(&format!("| `--{long}` |"))
            } else if defaults.contains(&long) && !listed.contains(&long) {
                cells[3].contains("injection defaults") && inject_flags.contains(&long)
            } else {
                listed.contains(&long)
            };
            if !documented {
                missing.push(format!("wsdrain {verb} --{long}"));
            }
        }
        // And the example names a real variable of that verb.
        for example in cells[4].split('`').skip(1).step_by(2) {
            if let Some(env) = example.strip_prefix("WSDRAIN_") {
                let known = verbs()
                    .into_iter()
                    .filter(|(v, _)| *v == verb)
                    .flat_map(|(_, a)| a)
                    .any(|a| env_of(&a).as_deref() == Some(&format!("WSDRAIN_{env}")));
                assert!(
                    known,
                    "README example {example} is not a variable of {verb}"
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags the README does not list:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_verb_table_lists_every_flag_of_its_verb() {
    let readme = read("README.md");
    let table = section(&readme, "### The verbs");
    let defaults = injection_defaults();
    let mut missing = Vec::new();
    for (verb, args) in verbs() {
        if verb == "proxy" {
            continue; // its own table
        }
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `wsdrain {verb}")))
            .unwrap_or_else(|| panic!("the verb table has no row for {verb}"));
        let command = row.split('|').nth(1).unwrap_or_default();
        for arg in args {
            let long = arg.get_long().unwrap_or_default();
            // Logging flags and the injection defaults have tables of their own.
            let exempt = long.starts_with("log-")
                || (defaults.iter().any(|d| d == long) && command.contains("DEFAULTS"));
            let named = command.contains(&format!("--{long}"))
                || arg
                    .get_short()
                    .is_some_and(|s| command.contains(&format!("-{s} ")));
            if !(named || exempt) {
                missing.push(format!("wsdrain {verb} --{long}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "verb table omits:\n{}",
        missing.join("\n")
    );
}

/// The `GET|POST|DELETE /path` endpoints a text names.
fn endpoints(text: &str) -> Vec<String> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '`' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = words
        .windows(2)
        .filter(|w| ["GET", "POST", "DELETE", "PUT"].contains(&w[0]) && w[1].starts_with('/'))
        .map(|w| format!("{} {}", w[0], w[1].trim_end_matches(['.', ')', ';'])))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn proxy_help_agrees_with_the_readme() {
    let readme = read("README.md");
    let table = section(&readme, "### `wsdrain proxy` flags");
    let (_, args) = verbs()
        .into_iter()
        .find(|(v, _)| v == "proxy")
        .expect("proxy verb");
    let mut wrong = Vec::new();
    for arg in args {
        let long = arg.get_long().unwrap_or_default();
        let Some(row) = table
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}` |")))
        else {
            continue; // the env-table test reports a missing row
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (default_cell, meaning) = (cells[2], cells[3]);
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        // Defaults: the README's backticked default is clap's; "none"/"off" is no value.
        let clap_default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let readme_default = default_cell.split('`').nth(1);
        match readme_default {
            Some(d) if clap_default != [d] => wrong.push(format!(
                "--{long}: README default {d:?}, help default {clap_default:?}"
            )),
            None if !(clap_default.is_empty() || clap_default == ["false"]) => wrong.push(format!(
                "--{long}: README says {default_cell:?}, help default {clap_default:?}"
            )),
            _ => {}
        }
        // Endpoints: both name the same ones.
        if endpoints(meaning) != endpoints(&help) {
            wrong.push(format!(
                "--{long}: README names {:?}, help names {:?}",
                endpoints(meaning),
                endpoints(&help)
            ));
        }
        // How a value is spread: an evenly spread value is not "drawn" at random.
        if meaning.contains("even") && (help.contains("drawn") || help.contains("random")) {
            wrong.push(format!("--{long}: README says evenly, help says {help:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A real `wsdrain inject` reads its image from `WSDRAIN_INJECT_IMAGE`, and no longer
/// from the proxy-style `WSDRAIN_IMAGE`.
#[test]
fn inject_reads_its_own_variables() {
    let bin =
        std::env::var("WSDRAIN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsdrain").into());
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: app:1\n    ports:\n    - name: http\n      containerPort: 8080\n";
    let run = |env: &[(&str, &str)]| {
        let mut child = Command::new(&bin)
            .args([
                "inject",
                "--all",
                "--token",
                "0123456789abcdef0123456789abcdef",
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsdrain inject");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(pod.as_bytes())
            .expect("write pod");
        let out = child.wait_with_output().expect("inject output");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&[("WSDRAIN_INJECT_IMAGE", "registry.example.com/wsdrain:env")]);
    assert!(
        out.contains("image: registry.example.com/wsdrain:env"),
        "WSDRAIN_INJECT_IMAGE not used:\n{out}"
    );
    let out = run(&[("WSDRAIN_IMAGE", "registry.example.com/wsdrain:proxy-style")]);
    assert!(
        !out.contains("proxy-style"),
        "WSDRAIN_IMAGE (a proxy-style name) changed inject's image:\n{out}"
    );
}

/// Every `wsdrain VERB ... --flag` the docs show names a flag that verb has.
#[test]
fn the_docs_name_only_flags_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    files.extend(
        std::fs::read_dir(root.join("docs"))
            .expect("docs/")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    let verbs: BTreeMap<String, Vec<String>> = verbs()
        .into_iter()
        .map(|(v, args)| {
            let longs = args
                .iter()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect();
            (v, longs)
        })
        .collect();
    let mut wrong = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("doc");
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("wsdrain ") {
                let rest = &line[i + "wsdrain ".len()..];
                // The command runs to the end of its code span or shell word list.
                let command = rest.split(['`', '|', ';', ')']).next().unwrap_or_default();
                let mut words = command.split_whitespace();
                let Some(verb) = words.next() else { continue };
                let Some(known) = verbs.get(verb) else {
                    continue;
                };
                for word in words.take_while(|w| *w != "--" && *w != "&&") {
                    let Some(flag) = word.strip_prefix("--") else {
                        continue;
                    };
                    let flag = flag.split('=').next().unwrap_or(flag);
                    let flag = flag.trim_end_matches([',', '.', ']']);
                    if !known.iter().any(|k| k == flag) && flag != "help" {
                        wrong.push(format!(
                            "{}:{}: wsdrain {verb} --{flag}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "flags that do not exist:\n{}",
        wrong.join("\n")
    );
}
