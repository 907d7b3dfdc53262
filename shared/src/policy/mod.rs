//! Policy files under `policies/`: loading, validation and the runtime rule sets.
//!
//! - [`load`]: reads every `*.yaml`/`*.yml` in a directory with serde-saphyr, refuses unknown
//!   keys, validates every rule and collects *all* problems across *all* files before
//!   answering, so an operator fixes a directory in one pass. Rule ids form one namespace
//!   across both sections and every file.
//! - [`registry`]: the `registry:` section: subject ACL rules for registry-proxy, their
//!   operations and subject patterns, and the deny-by-default evaluation that returns the id of
//!   the rule that permitted a request.
//! - [`topics`]: the `topics:` section: wire-guard's data-quality rules, which say what the
//!   keys and values produced to governed topics must look like (Confluent framing naming a
//!   registered schema) and what happens to a record that does not (reject, dead-letter, or
//!   audit), and the first-match lookup of the rule for a (topic, producer).
//! - [`store`]: the policy in force, behind a `watch` channel, and a poller that reloads when
//!   files change and keeps the old policy when the new one does not validate.

pub mod fields;
pub mod load;
pub mod registry;
pub mod store;
pub mod topics;

use std::{fmt, path::PathBuf};

pub use fields::{
    FieldAction, FieldPath, FieldRule, OnSignatureFailure, SignAlgorithm, SignRule, TaggedFields,
    WholeRule,
};
pub use load::{load_dir, parse_file};
pub use registry::{Decision, Operation, RegistryPolicy, RegistryRule, SubjectPattern};
pub use store::PolicyStore;
pub use topics::{
    OnInvalid, RecordRule, RegistryUnavailable, SubjectStrategy, TopicPattern, TopicPolicy,
    TopicRule,
};

/// Everything the services evaluate, built from one directory of policy files.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// Subject ACLs for registry-proxy, from every file's `registry:` section.
    pub registry: RegistryPolicy,
    /// Data-quality rules for wire-guard, from every file's `topics:` section, in file-name
    /// then file order (the order [`TopicPolicy::rule_for`] searches).
    pub topics: TopicPolicy,
    /// The files the set was built from, in load order, for logs and audit context.
    pub files: Vec<PathBuf>,
}

/// One problem in one policy file, with where it is and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file, as it was named when the directory was read.
    pub file: PathBuf,
    /// 1-based line, when the YAML parser or a spanned value knows it.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// What is wrong.
    pub message: String,
    /// What to write instead; empty when the message says it all.
    pub hint: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}
