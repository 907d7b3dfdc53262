//! Reading and validating a directory of policy files.
//!
//! Parsing uses serde-saphyr with `deny_unknown_fields` everywhere, so a misspelt key, or a
//! section this version does not implement (wire-guard's `topics:` today), is an error rather
//! than a rule that silently does nothing. Values are read as `Spanned` so that validation
//! errors point at the offending line and column.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    PolicyError, PolicySet,
    registry::{Operation, RegistryPolicy, RegistryRule, SubjectPattern},
};
use crate::{Error, principal::PrincipalPattern};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    registry: Option<RegistrySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    id: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    principals: Vec<Spanned<String>>,
    subjects: Vec<Spanned<String>>,
    operations: Vec<Spanned<String>>,
}

/// The validated content of one file, before rule ids are checked across files.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub registry: Vec<RegistryRule>,
    /// Where each rule's id was written, for duplicate-id errors across files.
    id_locations: Vec<(u64, u64)>,
}

/// Lists the policy files of `dir` in name order, so evaluation order is stable.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every `*.yaml`/`*.yml` file in `dir`. Any problem in any file fails the whole load
/// with every problem listed.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Error> {
    let files = policy_files(dir).map_err(|e| {
        Error::Policy(vec![PolicyError {
            file: dir.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read policy directory: {e}"),
            hint: "pass the directory holding the *.yaml policy files".into(),
        }])
    })?;
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    let mut seen: HashMap<Arc<str>, (PathBuf, u64)> = HashMap::new();
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(err(file, None, format!("cannot read: {e}"), ""));
                continue;
            }
        };
        match parse_file(file, &text) {
            Ok(parsed) => {
                for (rule, (line, column)) in parsed.registry.into_iter().zip(parsed.id_locations) {
                    if let Some((first_file, first_line)) = seen.get(&rule.id) {
                        errors.push(err(
                            file,
                            Some((line, column)),
                            format!("duplicate rule id {:?}", &*rule.id),
                            &format!(
                                "it is already used at {}:{first_line}; audit records name rules by id, so each id must be unique",
                                first_file.display()
                            ),
                        ));
                    } else {
                        seen.insert(rule.id.clone(), (file.clone(), line));
                        rules.push(rule);
                    }
                }
            }
            Err(mut file_errors) => errors.append(&mut file_errors),
        }
    }
    if errors.is_empty() {
        Ok(PolicySet {
            registry: RegistryPolicy { rules },
            files,
        })
    } else {
        Err(Error::Policy(errors))
    }
}

fn err(file: &Path, at: Option<(u64, u64)>, message: String, hint: &str) -> PolicyError {
    PolicyError {
        file: file.to_path_buf(),
        line: at.map(|a| a.0).filter(|l| *l > 0),
        column: at.map(|a| a.1).filter(|c| *c > 0),
        message,
        hint: hint.to_owned(),
    }
}

fn at<T>(s: &Spanned<T>) -> Option<(u64, u64)> {
    Some((s.referenced.line(), s.referenced.column()))
}

/// Parses and validates one file's text; `file` is only used to name it in errors.
pub fn parse_file(file: &Path, text: &str) -> Result<ParsedFile, Vec<PolicyError>> {
    // An empty file (or one holding only comments) is a valid, empty policy.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(ParsedFile::default());
    }
    let doc: PolicyFile = serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(file, &e)])?;
    let mut errors = Vec::new();
    let mut parsed = ParsedFile::default();
    let Some(section) = doc.registry else {
        return Ok(parsed);
    };
    let mut ids_here: HashMap<String, u64> = HashMap::new();
    for doc in section.rules {
        let before = errors.len();
        let id = doc.id.value.trim();
        if id.is_empty()
            || id != doc.id.value
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            errors.push(err(
                file,
                at(&doc.id),
                format!("rule id {:?} is not a plain name", doc.id.value),
                "use letters, digits, `-`, `_`, `.` or `:`, e.g. payments-owners",
            ));
        } else if let Some(first) = ids_here.get(id) {
            errors.push(err(
                file,
                at(&doc.id),
                format!("duplicate rule id {id:?}"),
                &format!("it is already used on line {first}; each rule needs its own id"),
            ));
        } else {
            ids_here.insert(id.to_owned(), doc.id.referenced.line());
        }
        let _ = doc.description;
        let mut principals = Vec::new();
        for p in &doc.principals {
            match PrincipalPattern::parse(&p.value) {
                Ok(pattern) => principals.push(pattern),
                Err(e) => errors.push(err(file, at(p), e.message, &e.hint)),
            }
        }
        let mut subjects = Vec::new();
        for s in &doc.subjects {
            match SubjectPattern::parse(&s.value) {
                Ok(pattern) => subjects.push(pattern),
                Err((message, hint)) => errors.push(err(file, at(s), message, &hint)),
            }
        }
        let mut operations = Vec::new();
        for o in &doc.operations {
            match o.value.parse::<Operation>() {
                Ok(op) => {
                    if op.is_global()
                        && !subjects.contains(&SubjectPattern::Any)
                        && doc.subjects.iter().all(|s| s.value != "*")
                    {
                        errors.push(err(
                            file,
                            at(o),
                            format!("operation {op} applies to the whole registry, but this rule's subjects are narrower"),
                            "grant global operations in a rule with subjects: [\"*\"]",
                        ));
                    }
                    operations.push(op);
                }
                Err(()) => errors.push(err(
                    file,
                    at(o),
                    format!("unknown operation {:?}", o.value),
                    &format!("expected one of {}{}", op_names(), suggestion(&o.value)),
                )),
            }
        }
        for (list, name, what) in [
            (
                doc.principals.is_empty(),
                "principals",
                "user:NAME, group:NAME, client:NAME or *",
            ),
            (
                doc.subjects.is_empty(),
                "subjects",
                "a subject, PREFIX* or *",
            ),
            (
                doc.operations.is_empty(),
                "operations",
                "one or more of read, write, ...",
            ),
        ] {
            if list {
                errors.push(err(
                    file,
                    at(&doc.id),
                    format!(
                        "rule {:?} has an empty `{name}` list, so it can never match",
                        doc.id.value
                    ),
                    &format!("list at least one of {what}, or delete the rule"),
                ));
            }
        }
        if errors.len() == before {
            parsed.registry.push(RegistryRule {
                id: id.into(),
                principals,
                subjects,
                operations,
            });
            parsed
                .id_locations
                .push((doc.id.referenced.line(), doc.id.referenced.column()));
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

fn op_names() -> String {
    Operation::ALL
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// "; did you mean ..." for a near miss, by edit distance.
fn suggestion(word: &str) -> String {
    Operation::ALL
        .iter()
        .map(|o| (edit_distance(word, o.as_str()), o.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, name)| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> PolicyError {
    let location = e.location().map(|l| (l.line(), l.column()));
    let plain = e.without_snippet().to_string();
    // The parser appends its own position; ours is in the prefix already.
    let message = plain
        .split_once(" at line ")
        .map_or(plain.as_str(), |(m, _)| m)
        .trim()
        .to_owned();
    let hint = if message.contains("unknown field") {
        "top-level keys: registry (rule keys: id, description, principals, subjects, operations); sections this version does not implement are refused rather than ignored"
    } else {
        ""
    };
    err(file, location, message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    fn errors_of(dir: &Path) -> Vec<String> {
        match load_dir(dir) {
            Err(Error::Policy(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected policy errors, got {other:?}"),
        }
    }

    const GOOD: &str = "registry:\n  rules:\n    - id: owners\n      principals: [\"group:payments\"]\n      subjects: [\"payments.*\"]\n      operations: [read, write]\n";

    #[test]
    fn loads_rules_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(
            dir.path(),
            "b.yml",
            "registry:\n  rules:\n    - id: readers\n      principals: [\"*\"]\n      subjects: [\"*\"]\n      operations: [read, global_read]\n",
        );
        write(dir.path(), "notes.txt", "not a policy");
        write(dir.path(), "empty.yaml", "# nothing yet\n");
        let set = load_dir(dir.path()).unwrap();
        let ids: Vec<_> = set.registry.rules.iter().map(|r| &*r.id).collect();
        assert_eq!(ids, ["owners", "readers"]);
        assert_eq!(set.files.len(), 3);
    }

    #[test]
    fn every_error_in_every_file_is_listed_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "registry.yaml",
            "registry:\n  rules:\n    - id: a\n      principals: [\"role:x\"]\n      subjects: [\"pay*ments\"]\n      operations: [read, wrte]\n",
        );
        write(
            dir.path(),
            "other.yaml",
            "registry:\n  rules:\n    - id: b\n      principals: [\"*\"]\n      subjects: [\"x\"]\n      operations: [global_read]\n",
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("other.yaml:6:") && e.contains("global_read")),
            "{errors:#?}"
        );
        let op = errors.iter().find(|e| e.contains("wrte")).unwrap();
        assert!(
            op.starts_with(&format!(
                "{}:6:",
                dir.path().join("registry.yaml").display()
            )),
            "{op}"
        );
        assert!(
            op.contains("unknown operation \"wrte\"; expected one of read, write, delete"),
            "{op}"
        );
        assert!(op.contains("did you mean \"write\""), "{op}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("registry.yaml:4:") && e.contains("role")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("registry.yaml:5:") && e.contains("pay*ments")),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "payments.yaml",
            "topics:\n  - match: \"payments.*\"\n",
        );
        write(
            dir.path(),
            "typo.yaml",
            "registry:\n  rules:\n    - id: a\n      principal: [\"*\"]\n      subjects: [\"*\"]\n      operations: [read]\n",
        );
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("payments.yaml:1:1") && e.contains("topics")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("typo.yaml:4:") && e.contains("principal")),
            "{errors:#?}"
        );
    }

    #[test]
    fn rule_ids_are_unique_across_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(dir.path(), "b.yaml", GOOD);
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("b.yaml:3:") && errors[0].contains("duplicate rule id \"owners\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bad.yaml", "registry:\n  rules: [\n");
        let errors = errors_of(dir.path());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("bad.yaml:"), "{errors:#?}");
    }

    #[test]
    fn empty_lists_can_never_match_and_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "registry:\n  rules:\n    - id: a\n      principals: []\n      subjects: [\"*\"]\n      operations: [read]\n",
        );
        let errors = errors_of(dir.path());
        assert!(errors[0].contains("empty `principals`"), "{errors:#?}");
    }

    #[test]
    fn example_policies_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let set = load_dir(&dir).unwrap_or_else(|e| panic!("policies/ does not validate:\n{e}"));
        assert!(!set.registry.rules.is_empty());
    }
}
