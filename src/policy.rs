//! IAM policy documents and their evaluation: identity policies attached to users, repository
//! policies (ECR's SetRepositoryPolicy) and the one registry policy.
//!
//! This module owns the policy model, parsing from JSON or YAML with every error named by its
//! path (`Statement[1].Effect`), and evaluation as IAM does it, with the statement that decided,
//! so the daemon can decide every request and `ecrl auth simulate` can explain the decision.
//! It does no I/O and reads no clock: the caller puts what it knows (`aws:SourceIp`,
//! `aws:CurrentTime`, `ecr:ResourceTag/...`) into the request's context.
//!
//! The rules, as IAM's documentation states them:
//! - An explicit `Deny` in any policy wins. Otherwise something must `Allow`; else the request
//!   is implicitly denied.
//! - Within one account an `Allow` from an identity policy or from a resource policy whose
//!   `Principal` names the caller is enough. From another account both sides must allow.
//! - A resource policy that names an *account* (`"123456789012"` or
//!   `arn:aws:iam::123456789012:root`) delegates to that account's identity policies: its
//!   `Allow` does not by itself let the account's users in, while its `Deny` applies to all of
//!   them.
//! - Actions match case-insensitively, resources and principals case-sensitively, all with the
//!   `*` and `?` wildcards; condition keys are case-insensitive.
//! - Policy variables (`${aws:username}`) are substituted in `Resource` and condition values
//!   of `Version` 2012-10-17 policies only; in older ones they are plain text.

use crate::names::RepoName;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

/// The ECR, ECS and IAM actions ecrl decides. Policies may name others (and wildcards); an
/// action pattern that matches none of these draws a warning, not an error.
pub const ACTIONS: &[&str] = &[
    // Registry: pull.
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
    // Registry: push.
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    // Repositories and images.
    "ecr:CreateRepository",
    "ecr:DeleteRepository",
    "ecr:DescribeRepositories",
    "ecr:DescribeImages",
    "ecr:ListImages",
    "ecr:ListImageReferrers",
    "ecr:BatchDeleteImage",
    "ecr:PutImageTagMutability",
    "ecr:ListTagsForResource",
    "ecr:TagResource",
    "ecr:UntagResource",
    "ecr:GetAuthorizationToken",
    // Policies.
    "ecr:SetRepositoryPolicy",
    "ecr:GetRepositoryPolicy",
    "ecr:DeleteRepositoryPolicy",
    "ecr:GetRegistryPolicy",
    "ecr:PutRegistryPolicy",
    "ecr:DeleteRegistryPolicy",
    "ecr:PutLifecyclePolicy",
    "ecr:GetLifecyclePolicy",
    "ecr:DeleteLifecyclePolicy",
    "ecr:StartLifecyclePolicyPreview",
    "ecr:GetLifecyclePolicyPreview",
    // Mirroring.
    "ecr:ReplicateImage",
    "ecr:BatchImportUpstreamImage",
    "ecr:DescribeRegistry",
    "ecr:PutReplicationConfiguration",
    "ecr:DescribeImageReplicationStatus",
    "ecr:CreatePullThroughCacheRule",
    "ecr:DescribePullThroughCacheRules",
    "ecr:DeletePullThroughCacheRule",
    "ecr:ValidatePullThroughCacheRule",
    "ecr:UpdatePullThroughCacheRule",
    // Task definitions and tasks.
    "ecs:RegisterTaskDefinition",
    "ecs:DescribeTaskDefinition",
    "ecs:ListTaskDefinitions",
    "ecs:ListTaskDefinitionFamilies",
    "ecs:DeregisterTaskDefinition",
    "ecs:DeleteTaskDefinitions",
    "ecs:RunTask",
    "ecs:StopTask",
    "ecs:DescribeTasks",
    "ecs:ListTasks",
    "ecs:StartTask",
    // Clusters, and tags on ECS resources (task definitions, tasks, clusters).
    "ecs:CreateCluster",
    "ecs:DescribeClusters",
    "ecs:ListClusters",
    "ecs:DeleteCluster",
    "ecs:TagResource",
    "ecs:UntagResource",
    "ecs:ListTagsForResource",
    // Users, keys and their policies.
    "iam:CreateUser",
    "iam:DeleteUser",
    "iam:GetUser",
    "iam:ListUsers",
    "iam:AttachUserPolicy",
    "iam:DetachUserPolicy",
    "iam:ListAttachedUserPolicies",
    "iam:CreateAccessKey",
    "iam:DeleteAccessKey",
    "iam:ListAccessKeys",
];

/// True when `action` is one of [`ACTIONS`] (compared case-insensitively, as IAM does).
pub fn is_known_action(action: &str) -> bool {
    ACTIONS.iter().any(|a| a.eq_ignore_ascii_case(action))
}

/// One concrete action, as a decision is asked about (no wildcards): one of [`ACTIONS`], or
/// an error that says what was probably meant (`PutImage` is `ecr:PutImage`).
pub fn known_action(action: &str) -> Result<(), String> {
    if is_known_action(action) {
        return Ok(());
    }
    let hint = if !action.contains(':') && is_known_action(&format!("ecr:{action}")) {
        format!(": actions carry their service prefix, as in ecr:{action}")
    } else {
        match suggest(action, ACTIONS) {
            Some(near) => format!(": did you mean {near}?"),
            None => ", such as ecr:BatchGetImage or ecr:PutImage".to_string(),
        }
    };
    Err(format!("{action:?} is not an action ecrl knows{hint}"))
}

/// `arn:aws:ecr:REGION:ACCOUNT:repository/NAME`, the resource of a repository's requests.
pub fn repository_arn(region: &str, account: &str, repository: &RepoName) -> String {
    format!("arn:aws:ecr:{region}:{account}:repository/{repository}")
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// What a policy is attached to, which decides the elements it must and must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Attached to a user: no `Principal` (the user is the principal), `Resource` required.
    Identity,
    /// ECR's repository policy: `Principal` required; `Resource` may be left out, meaning the
    /// repository the policy is set on.
    Repository,
    /// The registry policy: `Principal` and `Resource` required.
    Registry,
}

impl PolicyKind {
    /// The longest policy text AWS accepts for this kind, in characters, and whether
    /// whitespace counts: ECR's repository and registry policies allow 10,240 characters, IAM's
    /// managed policies 6,144 characters not counting whitespace.
    pub fn size_limit(self) -> (usize, bool) {
        match self {
            PolicyKind::Identity => (MAX_IDENTITY_POLICY_CHARS, false),
            PolicyKind::Repository => (MAX_REPOSITORY_POLICY_CHARS, true),
            PolicyKind::Registry => (MAX_REGISTRY_POLICY_CHARS, true),
        }
    }
}

impl PolicyKind {
    /// "an identity policy", "a repository policy", "a registry policy".
    fn with_article(self) -> &'static str {
        match self {
            PolicyKind::Identity => "an identity policy",
            PolicyKind::Repository => "a repository policy",
            PolicyKind::Registry => "a registry policy",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::Identity => "identity policy",
            PolicyKind::Repository => "repository policy",
            PolicyKind::Registry => "registry policy",
        })
    }
}

/// ECR's limit on a repository policy's text (SetRepositoryPolicy `policyText`).
pub const MAX_REPOSITORY_POLICY_CHARS: usize = 10_240;
/// ECR's limit on the registry policy's text (PutRegistryPolicy `policyText`).
pub const MAX_REGISTRY_POLICY_CHARS: usize = 10_240;
/// IAM's limit on a managed policy, whitespace not counted.
pub const MAX_IDENTITY_POLICY_CHARS: usize = 6_144;

/// The policy language version. Without one IAM uses 2008-10-17, which has no policy variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2012_10_17,
    V2008_10_17,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2012_10_17 => "2012-10-17",
            Version::V2008_10_17 => "2008-10-17",
        }
    }
}

/// A statement's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// An element given positively or with its `Not` form: `Action` / `NotAction`, `Resource` /
/// `NotResource`, `Principal` / `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<T> {
    /// The statement applies to what is listed.
    Listed(T),
    /// The statement applies to everything except what is listed.
    Not(T),
}

impl<T> Scope<T> {
    pub fn items(&self) -> &T {
        match self {
            Scope::Listed(t) | Scope::Not(t) => t,
        }
    }
}

/// The `Principal` element's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    /// `"Principal": "*"`: everyone, anonymous callers included.
    pub everyone: bool,
    /// `{"AWS": ...}`: `*`, account ids, account root ARNs and user ARNs, wildcards allowed.
    pub aws: Vec<String>,
    /// `{"Service": ...}`: parsed, never a local principal.
    pub service: Vec<String>,
    /// `{"Federated": ...}`: parsed, never a local principal.
    pub federated: Vec<String>,
    /// `{"CanonicalUser": ...}`: parsed, never a local principal.
    pub canonical_user: Vec<String>,
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// `None` in identity policies.
    pub principal: Option<Scope<Principals>>,
    pub action: Scope<Vec<String>>,
    /// `None` only in repository policies: the repository the policy is set on.
    pub resource: Option<Scope<Vec<String>>>,
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// `Statement[1]`, or `Statement` when the policy has a single statement object.
    path: String,
    /// Whether `Action`/`NotAction` was an array (for warning paths).
    action_is_array: bool,
}

impl Statement {
    /// Where this statement is in the document, e.g. `Statement[1]`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A condition operator: the base test, `...IfExists`, and a `ForAnyValue:` /
/// `ForAllValues:` qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    pub base: BaseOperator,
    pub if_exists: bool,
    pub set: Option<SetOperator>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOperator {
    /// At least one of the key's values must pass (false when the key is missing).
    ForAnyValue,
    /// Every one of the key's values must pass (true when the key is missing).
    ForAllValues,
}

/// The condition operators ecrl evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseOperator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    Null,
}

const BASE_OPERATORS: &[(&str, BaseOperator)] = &[
    ("StringEquals", BaseOperator::StringEquals),
    ("StringNotEquals", BaseOperator::StringNotEquals),
    (
        "StringEqualsIgnoreCase",
        BaseOperator::StringEqualsIgnoreCase,
    ),
    (
        "StringNotEqualsIgnoreCase",
        BaseOperator::StringNotEqualsIgnoreCase,
    ),
    ("StringLike", BaseOperator::StringLike),
    ("StringNotLike", BaseOperator::StringNotLike),
    ("ArnEquals", BaseOperator::ArnEquals),
    ("ArnLike", BaseOperator::ArnLike),
    ("ArnNotEquals", BaseOperator::ArnNotEquals),
    ("ArnNotLike", BaseOperator::ArnNotLike),
    ("NumericEquals", BaseOperator::NumericEquals),
    ("NumericNotEquals", BaseOperator::NumericNotEquals),
    ("NumericLessThan", BaseOperator::NumericLessThan),
    ("NumericLessThanEquals", BaseOperator::NumericLessThanEquals),
    ("NumericGreaterThan", BaseOperator::NumericGreaterThan),
    (
        "NumericGreaterThanEquals",
        BaseOperator::NumericGreaterThanEquals,
    ),
    ("DateEquals", BaseOperator::DateEquals),
    ("DateNotEquals", BaseOperator::DateNotEquals),
    ("DateLessThan", BaseOperator::DateLessThan),
    ("DateLessThanEquals", BaseOperator::DateLessThanEquals),
    ("DateGreaterThan", BaseOperator::DateGreaterThan),
    ("DateGreaterThanEquals", BaseOperator::DateGreaterThanEquals),
    ("Bool", BaseOperator::Bool),
    ("IpAddress", BaseOperator::IpAddress),
    ("NotIpAddress", BaseOperator::NotIpAddress),
    ("Null", BaseOperator::Null),
];

/// Operators IAM has that ecrl does not evaluate: named as such rather than as unknown.
const UNSUPPORTED_OPERATORS: &[&str] = &["BinaryEquals"];

impl BaseOperator {
    pub fn name(self) -> &'static str {
        BASE_OPERATORS
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("", |(name, _)| name)
    }

    /// Operators that require the key *not* to match: true when the key is missing.
    pub fn is_negated(self) -> bool {
        use BaseOperator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | ArnNotEquals
                | ArnNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
        )
    }

    /// Whether policy variables are substituted in this operator's values.
    fn takes_variables(self) -> bool {
        use BaseOperator::*;
        matches!(
            self,
            StringEquals
                | StringNotEquals
                | StringEqualsIgnoreCase
                | StringNotEqualsIgnoreCase
                | StringLike
                | StringNotLike
                | ArnEquals
                | ArnLike
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.set {
            Some(SetOperator::ForAnyValue) => f.write_str("ForAnyValue:")?,
            Some(SetOperator::ForAllValues) => f.write_str("ForAllValues:")?,
            None => {}
        }
        f.write_str(self.base.name())?;
        if self.if_exists {
            f.write_str("IfExists")?;
        }
        Ok(())
    }
}

/// One test of a `Condition` block: `{operator: {key: values}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub operator: Operator,
    /// As written; looked up case-insensitively.
    pub key: String,
    /// Any one may match. Booleans and numbers are kept as their text.
    pub values: Vec<String>,
}

/// A parsed, valid policy, with the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    text: String,
    kind: PolicyKind,
    version: Option<Version>,
    id: Option<String>,
    statements: Vec<Statement>,
}

impl Policy {
    /// Parses and checks a policy document (JSON, or YAML as the same document). All errors
    /// are returned, each with its path.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, InvalidPolicy> {
        parse_policy(text, kind).map_err(InvalidPolicy)
    }

    /// The document exactly as given, for `get` to return.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// Whether `${...}` is a policy variable here (only in 2012-10-17 policies).
    fn has_variables(&self) -> bool {
        self.version == Some(Version::V2012_10_17)
    }

    /// Things that are valid but probably not meant: actions that match no action ecrl knows,
    /// `${...}` in a policy whose version makes it literal text, `NotPrincipal` with `Allow`.
    pub fn warnings(&self) -> Vec<PolicyError> {
        let mut out = Vec::new();
        for st in &self.statements {
            let element = match st.action {
                Scope::Listed(_) => "Action",
                Scope::Not(_) => "NotAction",
            };
            for (i, pattern) in st.action.items().iter().enumerate() {
                let toks = literal_tokens(pattern, true);
                if !ACTIONS.iter().any(|a| glob(&toks, a, true)) {
                    let path = if st.action_is_array {
                        format!("{}.{element}[{i}]", st.path)
                    } else {
                        format!("{}.{element}", st.path)
                    };
                    out.push(PolicyError::new(
                        path,
                        format!(
                            "{pattern:?} matches no action ecrl knows, so it has no effect here"
                        ),
                    ));
                }
            }
            if !self.has_variables() {
                let in_resource = st
                    .resource
                    .as_ref()
                    .is_some_and(|r| r.items().iter().any(|v| v.contains("${")));
                let in_condition = st
                    .conditions
                    .iter()
                    .any(|c| c.values.iter().any(|v| v.contains("${")));
                if in_resource || in_condition {
                    out.push(PolicyError::new(
                        st.path.clone(),
                        "${...} is literal text here: policy variables need \
                         \"Version\": \"2012-10-17\"",
                    ));
                }
            }
            if st.effect == Effect::Allow && matches!(st.principal, Some(Scope::Not(_))) {
                out.push(PolicyError::new(
                    format!("{}.NotPrincipal", st.path),
                    "Allow with NotPrincipal allows everyone not listed, anonymous callers included",
                ));
            }
        }
        out
    }
}

impl Policy {
    /// The `Resource` entries that can never match one of this registry's ARNs
    /// (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME` and `arn:aws:ecr:REGION:ACCOUNT:registry`):
    /// another partition, service, region or account, as in a policy copied from AWS. Such a
    /// statement allows or denies nothing here. Entries with policy variables may match and
    /// are not reported; neither is `NotResource`, which then covers everything of ours.
    pub fn foreign_resources(&self, region: &str, account: &str) -> Vec<PolicyError> {
        let ours = ["arn", "aws", "ecr", region, account];
        let mut out = Vec::new();
        for (index, st) in self.statements.iter().enumerate() {
            let Some(Scope::Listed(resources)) = &st.resource else {
                continue;
            };
            let array = resources.len() > 1;
            for (i, pattern) in resources.iter().enumerate() {
                if pattern.contains("${") && self.has_variables() {
                    continue;
                }
                let Some(part) = foreign_part(pattern, &ours) else {
                    continue;
                };
                let statement = match &st.sid {
                    Some(sid) => format!("statement {sid:?}"),
                    None => format!("statement {index}"),
                };
                let path = if array {
                    format!("{}.Resource[{i}]", st.path)
                } else {
                    format!("{}.Resource", st.path)
                };
                out.push(PolicyError::new(
                    path,
                    format!(
                        "{statement}: {pattern:?} can never match here ({part}), so it \
                         allows or denies nothing: ecrl's ARNs are \
                         arn:aws:ecr:{region}:{account}:repository/NAME; write those (or * \
                         for the region and account), or set region and account_id in ecrl's \
                         config file to the ones the policy names"
                    ),
                ));
            }
        }
        out
    }
}

/// Why a `Resource` pattern can never match `arn:aws:ecr:REGION:ACCOUNT:...`, naming the
/// part that differs; `None` when it can match.
fn foreign_part(pattern: &str, ours: &[&str; 5]) -> Option<String> {
    const PARTS: [&str; 6] = ["", "partition", "service", "region", "account", "resource"];
    if pattern == "*" {
        return None;
    }
    let parts = split_arn(pattern, false);
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate().take(5).skip(1) {
        let expected = ours[i];
        let fits = if i == last && last < 5 {
            // The last part's `*` spans the rest: its text up to the first wildcard must
            // agree with ours from here on.
            let literal: String = part
                .chars()
                .take_while(|c| *c != '*' && *c != '?')
                .collect();
            let rest = ours[i..].join(":") + ":";
            rest.starts_with(&literal)
        } else {
            glob(&literal_tokens(part, true), expected, false)
        };
        if !fits {
            return Some(format!("its {} is {part:?}, not {expected:?}", PARTS[i]));
        }
        if i == last {
            return None;
        }
    }
    if last == 5 {
        let resource = parts[5];
        let literal: String = resource
            .chars()
            .take_while(|c| *c != '*' && *c != '?')
            .collect();
        let toks = literal_tokens(resource, true);
        let repository = "repository/".starts_with(&literal) || literal.starts_with("repository/");
        if !repository && !glob(&toks, "registry", false) {
            return Some(format!(
                "its resource {resource:?} is neither repository/NAME nor registry"
            ));
        }
    }
    None
}

/// Checks a policy document, returning every error (empty when it is valid).
pub fn validate(text: &str, kind: PolicyKind) -> Vec<PolicyError> {
    match parse_policy(text, kind) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

/// One thing wrong with a policy document: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_path_message(.path, .message))]
pub struct PolicyError {
    /// e.g. `Statement[1].Condition.StringEquals.aws:username`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl PolicyError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn display_path_message(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// A policy document that was rejected, with all its errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy document: {}", join_errors(.0))]
pub struct InvalidPolicy(pub Vec<PolicyError>);

fn join_errors(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------------------------

/// A JSON or YAML value that keeps object members in order and keeps duplicates, so that a
/// document naming `Effect` twice is rejected instead of silently taking one of them.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn describe(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::Str(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            members.push((key, value));
        }
        Ok(Node::Object(members))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// JSON, or YAML when the text is not JSON.
fn read_document(text: &str) -> Result<Node, PolicyError> {
    let json_error = match serde_json::from_str::<Node>(text) {
        Ok(node) => return Ok(node),
        Err(e) => e,
    };
    // Before the YAML parser, whose time grows with the square of the depth.
    if let Err(e) = crate::nesting::check_depth(text) {
        let why = if text.trim_start().starts_with('{') {
            format!("not valid JSON: {json_error}")
        } else {
            format!("not valid JSON or YAML: {e}")
        };
        return Err(PolicyError::new("", why));
    }
    match serde_yaml::from_str::<Node>(text) {
        Ok(node) => Ok(node),
        // Text that starts like JSON was almost surely meant as JSON: the JSON parser's
        // complaint (with line and column) serves it better.
        Err(_) if text.trim_start().starts_with('{') => Err(PolicyError::new(
            "",
            format!("not valid JSON: {json_error}"),
        )),
        Err(e) => Err(PolicyError::new("", format!("not valid JSON or YAML: {e}"))),
    }
}

const TOP_ELEMENTS: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT_ELEMENTS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];
const PRINCIPAL_KEYS: &[&str] = &["AWS", "Service", "Federated", "CanonicalUser"];

const IDENTITY_WITH_PRINCIPAL: &str = "an identity policy cannot have a Principal or \
    NotPrincipal: the principal is the user it is attached to";
const PRINCIPAL_USAGE: &str = "use \"*\" or an object such as \
    {\"AWS\": \"arn:aws:iam::123456789012:user/name\"}";
const AWS_PRINCIPAL_USAGE: &str = "is not \"*\", a 12-digit account id or an IAM ARN \
    such as arn:aws:iam::123456789012:user/name";

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

struct Parser {
    kind: PolicyKind,
    /// `${...}` is a policy variable (Version 2012-10-17).
    variables: bool,
    errors: Vec<PolicyError>,
}

fn parse_policy(text: &str, kind: PolicyKind) -> Result<Policy, Vec<PolicyError>> {
    let mut p = Parser {
        kind,
        variables: false,
        errors: Vec::new(),
    };
    let (limit, whitespace_counts) = kind.size_limit();
    let size = text
        .chars()
        .filter(|c| whitespace_counts || !c.is_whitespace())
        .count();
    if size > limit {
        let counted = if whitespace_counts {
            "characters"
        } else {
            "characters not counting whitespace"
        };
        p.err(
            "",
            format!("the {kind} is {size} {counted}; at most {limit} are allowed"),
        );
    }
    // Far past the limit, the size is all there is to say; parsing it would only cost.
    if size > limit.saturating_mul(8) {
        return Err(p.errors);
    }
    if text.trim().is_empty() {
        p.err("", "the policy document is empty");
        return Err(p.errors);
    }
    let node = match read_document(text) {
        Ok(node) => node,
        Err(e) => {
            p.errors.push(e);
            return Err(p.errors);
        }
    };
    let Some(top) = p.object("", &node, TOP_ELEMENTS) else {
        return Err(p.errors);
    };

    let version = match get(&top, "Version") {
        None => None,
        Some(Node::Str(s)) if s == "2012-10-17" => Some(Version::V2012_10_17),
        Some(Node::Str(s)) if s == "2008-10-17" => Some(Version::V2008_10_17),
        Some(other) => {
            p.err(
                "Version",
                format!(
                    "{} is not a policy language version: use \"2012-10-17\" (or \"2008-10-17\")",
                    show(other)
                ),
            );
            None
        }
    };
    p.variables = version == Some(Version::V2012_10_17);

    let id = match get(&top, "Id") {
        None => None,
        Some(Node::Str(s)) => Some(s.clone()),
        Some(other) => {
            p.err("Id", format!("must be a string, not {}", other.describe()));
            None
        }
    };

    let mut statements = Vec::new();
    match get(&top, "Statement") {
        None => p.err("", "Statement is required"),
        Some(Node::Array(items)) if items.is_empty() => {
            p.err("Statement", "at least one statement is required")
        }
        Some(Node::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(st) = p.statement(&format!("Statement[{i}]"), item) {
                    statements.push(st);
                }
            }
        }
        Some(node @ Node::Object(_)) => {
            if let Some(st) = p.statement("Statement", node) {
                statements.push(st);
            }
        }
        Some(other) => p.err(
            "Statement",
            format!(
                "must be an object or an array of objects, not {}",
                other.describe()
            ),
        ),
    }

    // IAM requires statement ids to be unique within a policy.
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for st in &statements {
        if let Some(sid) = st.sid.as_deref().filter(|s| !s.is_empty()) {
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == sid) {
                let message = format!("duplicate Sid {sid:?} (also {first})");
                p.errors
                    .push(PolicyError::new(child(&st.path, "Sid"), message));
            } else {
                seen.push((sid, st.path.as_str()));
            }
        }
    }

    if p.errors.is_empty() {
        Ok(Policy {
            text: text.to_string(),
            kind,
            version,
            id,
            statements,
        })
    } else {
        Err(p.errors)
    }
}

fn get<'n>(members: &[(&'n str, &'n Node)], name: &str) -> Option<&'n Node> {
    members.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// A value for messages: strings quoted, others by kind.
fn show(node: &Node) -> String {
    match node {
        Node::Str(s) => format!("{s:?}"),
        Node::Number(n) => n.clone(),
        Node::Bool(b) => b.to_string(),
        other => other.describe().to_string(),
    }
}

impl Parser {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError::new(path, message));
    }

    /// The members of an object, reporting duplicates and (when `known` is not empty) members
    /// not in `known`, which are left out of the result.
    fn object<'n>(
        &mut self,
        path: &str,
        node: &'n Node,
        known: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let Node::Object(members) = node else {
            let what = if path.is_empty() {
                "the policy document".to_string()
            } else {
                path.to_string()
            };
            self.err(
                path,
                format!("{what} must be an object, not {}", node.describe()),
            );
            return None;
        };
        let mut out: Vec<(&str, &Node)> = Vec::new();
        for (key, value) in members {
            let at = child(path, key);
            if out.iter().any(|(k, _)| k == key) {
                self.err(at, "duplicate element");
                continue;
            }
            if !known.is_empty() && !known.contains(&key.as_str()) {
                let hint = match suggest(key, known) {
                    Some(s) => format!("; did you mean {s}?"),
                    None => format!("; expected one of {}", known.join(", ")),
                };
                self.err(at, format!("unknown element{hint}"));
                continue;
            }
            out.push((key.as_str(), value));
        }
        Some(out)
    }

    /// A string or a non-empty array of strings.
    fn strings(&mut self, path: &str, node: &Node) -> Option<Vec<String>> {
        match node {
            Node::Str(s) => Some(vec![s.clone()]),
            Node::Array(items) if items.is_empty() => {
                self.err(path, "must not be an empty array");
                None
            }
            Node::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Node::Str(s) => out.push(s.clone()),
                        other => {
                            ok = false;
                            self.err(
                                format!("{path}[{i}]"),
                                format!("must be a string, not {}", other.describe()),
                            );
                        }
                    }
                }
                ok.then_some(out)
            }
            other => {
                self.err(
                    path,
                    format!(
                        "must be a string or an array of strings, not {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// One statement; `None` (with its errors recorded) when it is not valid.
    fn statement(&mut self, at: &str, node: &Node) -> Option<Statement> {
        let before = self.errors.len();
        let fields = self.object(at, node, STATEMENT_ELEMENTS)?;
        let field = |name: &str| get(&fields, name);

        let sid = match field("Sid") {
            None => None,
            Some(Node::Str(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    child(at, "Sid"),
                    format!("must be a string, not {}", other.describe()),
                );
                None
            }
        };

        let effect = match field("Effect") {
            None => {
                self.err(at, "Effect is required");
                None
            }
            Some(Node::Str(s)) if s == "Allow" => Some(Effect::Allow),
            Some(Node::Str(s)) if s == "Deny" => Some(Effect::Deny),
            Some(other) => {
                self.err(
                    child(at, "Effect"),
                    format!("{} is not Allow or Deny", show(other)),
                );
                None
            }
        };

        let principal = match (field("Principal"), field("NotPrincipal")) {
            (Some(_), Some(_)) => {
                self.err(at, "Principal and NotPrincipal cannot both be given");
                None
            }
            (Some(n), None) => self
                .principals(&child(at, "Principal"), n)
                .map(Scope::Listed),
            (None, Some(n)) => self
                .principals(&child(at, "NotPrincipal"), n)
                .map(Scope::Not),
            (None, None) => None,
        };
        let has_principal = field("Principal").is_some() || field("NotPrincipal").is_some();
        match self.kind {
            PolicyKind::Identity if has_principal => self.err(at, IDENTITY_WITH_PRINCIPAL),
            PolicyKind::Repository | PolicyKind::Registry if !has_principal => self.err(
                at,
                format!(
                    "{} needs a Principal (or NotPrincipal)",
                    self.kind.with_article()
                ),
            ),
            _ => {}
        }

        let action_is_array =
            matches!(field("Action").or(field("NotAction")), Some(Node::Array(_)));
        let action = match (field("Action"), field("NotAction")) {
            (Some(_), Some(_)) => {
                self.err(at, "Action and NotAction cannot both be given");
                None
            }
            (None, None) => {
                self.err(at, "Action or NotAction is required");
                None
            }
            (Some(n), None) => self.actions(&child(at, "Action"), n).map(Scope::Listed),
            (None, Some(n)) => self.actions(&child(at, "NotAction"), n).map(Scope::Not),
        };

        let resource = match (field("Resource"), field("NotResource")) {
            (Some(_), Some(_)) => {
                self.err(at, "Resource and NotResource cannot both be given");
                None
            }
            (None, None) => {
                if self.kind != PolicyKind::Repository {
                    self.err(
                        at,
                        format!(
                            "Resource or NotResource is required in {}",
                            self.kind.with_article()
                        ),
                    );
                }
                None
            }
            (Some(n), None) => self.resources(&child(at, "Resource"), n).map(Scope::Listed),
            (None, Some(n)) => self.resources(&child(at, "NotResource"), n).map(Scope::Not),
        };

        let conditions = match field("Condition") {
            None => Vec::new(),
            Some(n) => self.conditions(&child(at, "Condition"), n),
        };

        if self.errors.len() > before {
            return None;
        }
        Some(Statement {
            sid,
            effect: effect?,
            principal,
            action: action?,
            resource,
            conditions,
            path: at.to_string(),
            action_is_array,
        })
    }

    fn principals(&mut self, path: &str, node: &Node) -> Option<Principals> {
        match node {
            Node::Str(s) if s == "*" => {
                return Some(Principals {
                    everyone: true,
                    ..Principals::default()
                })
            }
            Node::Str(s) => {
                self.err(path, format!("{s:?} is not a principal: {PRINCIPAL_USAGE}"));
                return None;
            }
            _ => {}
        }
        let before = self.errors.len();
        let members = self.object(path, node, PRINCIPAL_KEYS)?;
        if members.is_empty() && self.errors.len() == before {
            self.err(path, "names no principal");
            return None;
        }
        let mut out = Principals::default();
        for (key, value) in members {
            let at = child(path, key);
            let Some(values) = self.strings(&at, value) else {
                continue;
            };
            match key {
                "AWS" => {
                    for (i, v) in values.iter().enumerate() {
                        if !valid_aws_principal(v) {
                            let vat = if matches!(value, Node::Array(_)) {
                                format!("{at}[{i}]")
                            } else {
                                at.clone()
                            };
                            self.err(vat, format!("{v:?} {AWS_PRINCIPAL_USAGE}"));
                        }
                    }
                    out.aws = values;
                }
                "Service" => out.service = values,
                "Federated" => out.federated = values,
                _ => out.canonical_user = values,
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    fn actions(&mut self, path: &str, node: &Node) -> Option<Vec<String>> {
        let values = self.strings(path, node)?;
        let before = self.errors.len();
        for (i, a) in values.iter().enumerate() {
            if let Err(message) = check_action(a) {
                let at = if matches!(node, Node::Array(_)) {
                    format!("{path}[{i}]")
                } else {
                    path.to_string()
                };
                self.err(at, message);
            }
        }
        (self.errors.len() == before).then_some(values)
    }

    fn resources(&mut self, path: &str, node: &Node) -> Option<Vec<String>> {
        let values = self.strings(path, node)?;
        let before = self.errors.len();
        for (i, r) in values.iter().enumerate() {
            if let Err(message) = check_arn_pattern(r, self.variables) {
                let at = if matches!(node, Node::Array(_)) {
                    format!("{path}[{i}]")
                } else {
                    path.to_string()
                };
                self.err(at, message);
            }
        }
        (self.errors.len() == before).then_some(values)
    }

    fn conditions(&mut self, path: &str, node: &Node) -> Vec<Condition> {
        let mut out = Vec::new();
        let Some(blocks) = self.object(path, node, &[]) else {
            return out;
        };
        for (name, block) in blocks {
            let at = child(path, name);
            let operator = match parse_operator(name) {
                Ok(op) => op,
                Err(message) => {
                    self.err(at, message);
                    continue;
                }
            };
            let Some(keys) = self.object(&at, block, &[]) else {
                continue;
            };
            for (key, value) in keys {
                let kat = child(&at, key);
                if key.is_empty() {
                    self.err(kat, "the condition key is empty");
                    continue;
                }
                let Some(values) = self.condition_values(&kat, value) else {
                    continue;
                };
                let before = self.errors.len();
                for (i, v) in values.iter().enumerate() {
                    if let Err(message) = self.check_condition_value(operator.base, v) {
                        let vat = if matches!(value, Node::Array(_)) {
                            format!("{kat}[{i}]")
                        } else {
                            kat.clone()
                        };
                        self.err(vat, message);
                    }
                }
                if self.errors.len() == before {
                    out.push(Condition {
                        operator,
                        key: key.to_string(),
                        values,
                    });
                }
            }
        }
        out
    }

    /// A condition's value(s): strings, booleans and numbers (kept as text), or a non-empty
    /// array of them.
    fn condition_values(&mut self, path: &str, node: &Node) -> Option<Vec<String>> {
        let scalar = |n: &Node| match n {
            Node::Str(s) => Some(s.clone()),
            Node::Bool(b) => Some(b.to_string()),
            Node::Number(x) => Some(x.clone()),
            _ => None,
        };
        match node {
            Node::Array(items) if items.is_empty() => {
                self.err(path, "needs at least one value");
                None
            }
            Node::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match scalar(item) {
                        Some(v) => out.push(v),
                        None => self.err(
                            format!("{path}[{i}]"),
                            format!(
                                "must be a string, number or boolean, not {}",
                                item.describe()
                            ),
                        ),
                    }
                }
                (out.len() == items.len()).then_some(out)
            }
            other => match scalar(other) {
                Some(v) => Some(vec![v]),
                None => {
                    self.err(
                        path,
                        format!(
                            "must be a string, number or boolean or an array of them, not {}",
                            other.describe()
                        ),
                    );
                    None
                }
            },
        }
    }

    fn check_condition_value(&self, op: BaseOperator, v: &str) -> Result<(), String> {
        use BaseOperator::*;
        match op {
            Bool | Null => {
                if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
                    Ok(())
                } else {
                    Err(format!("{v:?} is not true or false"))
                }
            }
            IpAddress | NotIpAddress => parse_cidr(v).map(|_| ()).ok_or_else(|| {
                format!("{v:?} is not an IP address or CIDR block such as 203.0.113.0/24")
            }),
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => parse_number(v)
                .map(|_| ())
                .ok_or_else(|| format!("{v:?} is not a number")),
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => parse_date(v).map(|_| ()).ok_or_else(|| {
                format!("{v:?} is not a date: use ISO 8601 (2025-01-31T12:00:00Z) or epoch seconds")
            }),
            ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => check_arn_pattern(v, self.variables),
            StringEquals
            | StringNotEquals
            | StringEqualsIgnoreCase
            | StringNotEqualsIgnoreCase
            | StringLike
            | StringNotLike => {
                if self.variables {
                    scan_variables(v).map(|_| ())
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// `StringEquals`, `StringLikeIfExists`, `ForAnyValue:StringLike`, ...
fn parse_operator(name: &str) -> Result<Operator, String> {
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (Some(SetOperator::ForAnyValue), rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (Some(SetOperator::ForAllValues), rest)
    } else {
        (None, name)
    };
    let (base_name, if_exists) = match rest.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    let Some(base) = BASE_OPERATORS
        .iter()
        .find(|(n, _)| *n == base_name)
        .map(|(_, op)| *op)
    else {
        if UNSUPPORTED_OPERATORS.contains(&base_name) {
            return Err(format!(
                "the condition operator {base_name} is not supported by ecrl"
            ));
        }
        let names: Vec<&str> = BASE_OPERATORS.iter().map(|(n, _)| *n).collect();
        let hint = suggest(base_name, &names)
            .map(|s| format!("; did you mean {s}?"))
            .unwrap_or_default();
        return Err(format!("unknown condition operator {name:?}{hint}"));
    };
    if base == BaseOperator::Null && (if_exists || set.is_some()) {
        return Err(format!(
            "{name:?}: Null takes neither IfExists nor ForAnyValue/ForAllValues"
        ));
    }
    Ok(Operator {
        base,
        if_exists,
        set,
    })
}

/// `*`, or `service:Action` where the action may have wildcards.
fn check_action(a: &str) -> Result<(), String> {
    if a == "*" {
        return Ok(());
    }
    let usage = "expected service:Action such as ecr:BatchGetImage, ecr:Batch* or *";
    let Some((service, name)) = a.split_once(':') else {
        return Err(format!("{a:?} is not an action: {usage}"));
    };
    if service.is_empty()
        || !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "{a:?} is not an action: the service prefix takes letters, digits and '-', no wildcards"
        ));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?')
    {
        return Err(format!("{a:?} is not an action: {usage}"));
    }
    Ok(())
}

/// `*`, or an ARN pattern: six colon-separated parts, or fewer when the last part ends with `*`
/// (which then spans the rest).
fn check_arn_pattern(s: &str, variables: bool) -> Result<(), String> {
    if s == "*" {
        return Ok(());
    }
    let usage = format!("{s:?} is not an ARN (arn:partition:service:region:account:resource) or *");
    if !s.starts_with("arn:") {
        return Err(usage);
    }
    let parts = split_arn(s, variables);
    if parts.len() < 6 && !parts.last().is_some_and(|p| p.ends_with('*')) {
        return Err(usage);
    }
    if variables {
        scan_variables(s)?;
    }
    Ok(())
}

/// `*`, a 12-digit account id (wildcards allowed), or an ARN.
fn valid_aws_principal(v: &str) -> bool {
    if v == "*" {
        return true;
    }
    if v.starts_with("arn:") {
        return v.splitn(6, ':').count() == 6;
    }
    let wild = v.contains(['*', '?']);
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '?')
        && (wild || v.len() == 12)
}

/// The closest of `known` to `given` (same letters in another case, or a small typo).
fn suggest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    let g = given.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&g, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2 && given.len() > 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Wildcards, ARNs and policy variables
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    One,
}

/// Matches `text` against a pattern of tokens; `fold` compares ASCII letters case-insensitively.
fn glob(pattern: &[Tok], text: &str, fold: bool) -> bool {
    let s: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut i) = (0usize, 0usize);
    // Where the last `*` was, and the text position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pattern.get(p) {
            Some(Tok::Star) => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            Some(Tok::One) => {
                p += 1;
                i += 1;
                continue;
            }
            Some(Tok::Lit(c)) if eq(*c, s[i]) => {
                p += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|t| *t == Tok::Star)
}

/// Tokens of a pattern without variables; with `wildcards` false, `*` and `?` are literal.
fn literal_tokens(s: &str, wildcards: bool) -> Vec<Tok> {
    s.chars()
        .map(|c| match c {
            '*' if wildcards => Tok::Star,
            '?' if wildcards => Tok::One,
            c => Tok::Lit(c),
        })
        .collect()
}

/// One piece of a value that may hold policy variables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    /// `${key}` or `${key, 'default'}`; `${*}`, `${?}` and `${$}` have the key `*`, `?`, `$`.
    Var {
        key: &'a str,
        default: Option<String>,
    },
}

/// Splits a value into text and `${...}` variables.
fn scan_variables(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let body = &rest[start + 2..];
        let mut in_quote = false;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                '\'' => in_quote = !in_quote,
                '}' if !in_quote => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err(format!(
                "{s:?} has a policy variable without its closing '}}'"
            ));
        };
        out.push(parse_variable(&body[..end]).map_err(|m| format!("{s:?}: {m}"))?);
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn parse_variable(inner: &str) -> Result<Piece<'_>, String> {
    let (key, default) = match inner.find(',') {
        None => (inner.trim(), None),
        Some(comma) => {
            let d = inner[comma + 1..].trim();
            let quoted = d.len() >= 2 && d.starts_with('\'') && d.ends_with('\'');
            let body = if quoted { &d[1..d.len() - 1] } else { "" };
            if !quoted || body.replace("''", "").contains('\'') {
                return Err(format!(
                    "the default of ${{{inner}}} must be in single quotes ('' for a quote)"
                ));
            }
            (inner[..comma].trim(), Some(body.replace("''", "'")))
        }
    };
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains('\'') {
        return Err(format!("${{{inner}}} does not name a condition key"));
    }
    Ok(Piece::Var { key, default })
}

/// Tokens of a pattern with its variables substituted (literally: a substituted `*` is not a
/// wildcard). `None` when a variable has no single value and no default: such a value matches
/// nothing, as in IAM.
fn tokens(s: &str, ctx: Option<&Ctx>, wildcards: bool) -> Option<Vec<Tok>> {
    let Some(ctx) = ctx else {
        return Some(literal_tokens(s, wildcards));
    };
    let mut out = Vec::new();
    for piece in scan_variables(s).ok()? {
        match piece {
            Piece::Text(t) => out.extend(literal_tokens(t, wildcards)),
            Piece::Var { key, default } => {
                let value = match key {
                    "*" | "?" | "$" => key.to_string(),
                    _ => ctx.single(key).map(str::to_string).or(default)?,
                };
                out.extend(value.chars().map(Tok::Lit));
            }
        }
    }
    Some(out)
}

/// The value with its variables substituted, for the equality operators.
fn substitute(s: &str, ctx: Option<&Ctx>) -> Option<String> {
    let toks = tokens(s, ctx, false)?;
    Some(
        toks.iter()
            .map(|t| match t {
                Tok::Lit(c) => *c,
                Tok::Star => '*',
                Tok::One => '?',
            })
            .collect(),
    )
}

/// Splits an ARN (pattern) into at most six colon-separated parts; with `variables`, colons
/// inside `${...}` do not split.
fn split_arn(s: &str, variables: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut depth = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() && parts.len() < 5 {
        match bytes[i] {
            b'$' if variables && bytes.get(i + 1) == Some(&b'{') => {
                depth = true;
                i += 1;
            }
            b'}' if depth => depth = false,
            b':' if !depth => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// IAM's ARN matching (the `Resource` element and the `Arn...` operators): each of the six
/// parts is matched on its own, wildcards included; a pattern with fewer parts whose last part
/// ends in `*` lets that `*` span the rest of the ARN.
fn arn_matches(pattern: &str, value: &str, ctx: Option<&Ctx>) -> bool {
    if pattern == "*" {
        return true;
    }
    let pparts = split_arn(pattern, ctx.is_some());
    let vparts: Vec<&str> = value.splitn(6, ':').collect();
    let last = pparts.len() - 1;
    for (i, pp) in pparts.iter().enumerate() {
        let Some(toks) = tokens(pp, ctx, true) else {
            return false;
        };
        if i >= vparts.len() {
            return false;
        }
        if i == last && last < 5 {
            return if toks.last() == Some(&Tok::Star) {
                let rest = vparts[i..].join(":");
                glob(&toks, &rest, false)
            } else {
                vparts.len() == pparts.len() && glob(&toks, vparts[i], false)
            };
        }
        if !glob(&toks, vparts[i], false) {
            return false;
        }
    }
    vparts.len() == pparts.len()
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.trim().parse::<u8>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((ip, bits))
}

fn cidr_contains((net, bits): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// ISO 8601 (RFC 3339 date-times, or a bare date meaning midnight UTC) or epoch seconds, as
/// nanoseconds since the epoch.
fn parse_date(s: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(i128::from(secs) * 1_000_000_000);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &date_only)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No credentials: only `"*"` principals match.
    Anonymous,
    /// The account itself, `arn:aws:iam::ACCOUNT:root`. It gets no implicit permissions here:
    /// whether the registry's owner bypasses policies is the daemon's decision.
    Account(String),
    /// An IAM user, `arn:aws:iam::ACCOUNT:user/NAME`.
    User { account: String, name: String },
}

/// A principal that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid principal {0:?}: expected a user name, a 12-digit account id, \
     arn:aws:iam::ACCOUNT:root, arn:aws:iam::ACCOUNT:user/NAME or anonymous"
)]
pub struct PrincipalError(pub String);

impl Principal {
    pub fn user(account: impl Into<String>, name: impl Into<String>) -> Principal {
        Principal::User {
            account: account.into(),
            name: name.into(),
        }
    }

    /// `anonymous`, an account id, an account root or user ARN, or (with `default_account`)
    /// a bare user name.
    pub fn parse(text: &str, default_account: Option<&str>) -> Result<Principal, PrincipalError> {
        let bad = || PrincipalError(text.to_string());
        if text == "anonymous" {
            return Ok(Principal::Anonymous);
        }
        if is_account_id(text) {
            return Ok(Principal::Account(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("arn:aws:iam::") {
            let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
            if !is_account_id(account) {
                return Err(bad());
            }
            if resource == "root" {
                return Ok(Principal::Account(account.to_string()));
            }
            let name = resource.strip_prefix("user/").ok_or_else(bad)?;
            return if is_user_name(name) {
                Ok(Principal::user(account, name))
            } else {
                Err(bad())
            };
        }
        match default_account {
            Some(account) if is_user_name(text) => Ok(Principal::user(account, text)),
            _ => Err(bad()),
        }
    }

    /// The principal's ARN; `None` when anonymous.
    pub fn arn(&self) -> Option<String> {
        match self {
            Principal::Anonymous => None,
            Principal::Account(account) => Some(root_arn(account)),
            Principal::User { account, name } => {
                Some(format!("arn:aws:iam::{account}:user/{name}"))
            }
        }
    }

    pub fn account(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::Account(account) | Principal::User { account, .. } => Some(account),
        }
    }

    /// How IAM sees the request's principal: the user itself, then its account (which is why
    /// an account in a `Principal` covers the account's users, and why a `NotPrincipal` must
    /// list both a user and its account to leave the user out).
    fn identities(&self) -> Vec<Identity> {
        match self {
            Principal::Anonymous => vec![Identity::Anonymous],
            Principal::Account(account) => vec![Identity::Arn(root_arn(account))],
            Principal::User { account, .. } => vec![
                Identity::Arn(self.arn().unwrap_or_default()),
                Identity::Arn(root_arn(account)),
            ],
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.arn() {
            Some(arn) => f.write_str(&arn),
            None => f.write_str("anonymous"),
        }
    }
}

fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// IAM's user-name rule: 1-64 of `[A-Za-z0-9+=,.@_-]`.
fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    Anonymous,
    Arn(String),
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    /// e.g. `ecr:PutImage`.
    pub action: &'a str,
    /// The resource's ARN, or `*` for actions on no particular resource.
    pub resource: &'a str,
    /// Condition keys and their values (`aws:SourceIp`, `aws:CurrentTime`,
    /// `ecr:ResourceTag/team`, ...). `aws:username`, `aws:PrincipalArn`,
    /// `aws:PrincipalAccount` and `aws:PrincipalType` are derived from the principal unless
    /// given here.
    pub context: &'a BTreeMap<String, Vec<String>>,
}

/// A request's condition keys, looked up case-insensitively.
struct Ctx {
    values: BTreeMap<String, Vec<String>>,
}

impl Ctx {
    fn new(request: &Request<'_>) -> Ctx {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let p = request.principal;
        let kind = match p {
            Principal::Anonymous => "Anonymous",
            Principal::Account(_) => "Account",
            Principal::User { .. } => "User",
        };
        values.insert("aws:principaltype".into(), vec![kind.into()]);
        if let Some(arn) = p.arn() {
            values.insert("aws:principalarn".into(), vec![arn]);
        }
        if let Some(account) = p.account() {
            values.insert("aws:principalaccount".into(), vec![account.into()]);
        }
        if let Principal::User { name, .. } = p {
            values.insert("aws:username".into(), vec![name.clone()]);
        }
        for (key, v) in request.context {
            values.insert(key.to_lowercase(), v.clone());
        }
        Ctx { values }
    }

    /// The key's values; `None` when missing or empty.
    fn get(&self, key: &str) -> Option<&[String]> {
        self.values
            .get(&key.to_lowercase())
            .map(Vec::as_slice)
            .filter(|v| !v.is_empty())
    }

    /// The key's value when it has exactly one (what a policy variable needs).
    fn single(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some([one]) => Some(one),
            _ => None,
        }
    }
}

/// Which policy a resource policy is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicySource {
    /// The repository policy of this repository; its statements without `Resource` apply to
    /// the repository.
    Repository(RepoName),
    /// The registry policy.
    Registry,
}

/// Where a statement comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatementSource {
    /// An identity policy, by name.
    Identity(String),
    Repository(RepoName),
    Registry,
}

impl fmt::Display for StatementSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatementSource::Identity(name) => write!(f, "identity policy {name}"),
            StatementSource::Repository(repo) => write!(f, "repository policy {repo}"),
            StatementSource::Registry => f.write_str("registry policy"),
        }
    }
}

impl From<&PolicySource> for StatementSource {
    fn from(source: &PolicySource) -> StatementSource {
        match source {
            PolicySource::Repository(repo) => StatementSource::Repository(repo.clone()),
            PolicySource::Registry => StatementSource::Registry,
        }
    }
}

/// A statement that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatementRef {
    pub source: StatementSource,
    /// Its position in the policy's `Statement` list, from 0.
    pub index: usize,
    pub sid: Option<String>,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sid.as_deref().filter(|s| !s.is_empty()) {
            Some(sid) => write!(f, "statement {sid:?} (#{}) of {}", self.index, self.source),
            None => write!(f, "statement #{} of {}", self.index, self.source),
        }
    }
}

/// The outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionEffect {
    Allow,
    /// A `Deny` statement matched.
    ExplicitDeny,
    /// Nothing allowed it.
    ImplicitDeny,
}

/// Why a request was implicitly denied although a statement allowed part of it, or why an
/// allow took two statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionNote {
    /// The principal's account is not the resource's: an identity policy and a resource policy
    /// must both allow.
    CrossAccount {
        principal_account: String,
        resource_account: String,
    },
    /// A resource policy allows the principal's account, which delegates to the account's
    /// identity policies, and none of them allows.
    DelegatedToAccount { account: String },
}

/// What [`evaluate`] decided, and which statement decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: DecisionEffect,
    /// Allow: the (first) allowing statement; explicit deny: the (first) denying statement;
    /// implicit deny: a statement that allowed but was not enough (see `note`), if any.
    pub statement: Option<StatementRef>,
    /// A cross-account allow: the resource-policy statement that allowed beside `statement`.
    pub also: Option<StatementRef>,
    pub note: Option<DecisionNote>,
    /// The principal's ARN, or `anonymous`.
    pub principal: String,
    pub action: String,
    pub resource: String,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.effect == DecisionEffect::Allow
    }

    /// "access from account A to account B" for a cross-account decision.
    fn crossing(&self) -> Option<String> {
        match &self.note {
            Some(DecisionNote::CrossAccount {
                principal_account,
                resource_account,
            }) => Some(format!(
                "access from account {principal_account} to account {resource_account}"
            )),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (action, resource) = (&self.action, &self.resource);
        match (self.effect, &self.statement) {
            (DecisionEffect::Allow, Some(st)) => {
                write!(f, "ALLOW by {st}")?;
                if let (Some(also), Some(DecisionNote::CrossAccount { .. })) =
                    (&self.also, &self.note)
                {
                    let crossing = self.crossing().unwrap_or_default();
                    write!(f, " and {also} ({crossing} needs both)")?;
                }
                Ok(())
            }
            (DecisionEffect::Allow, None) => write!(f, "ALLOW"),
            (DecisionEffect::ExplicitDeny, Some(st)) => write!(f, "DENY by {st}"),
            (DecisionEffect::ExplicitDeny, None) => write!(f, "DENY"),
            (DecisionEffect::ImplicitDeny, Some(st)) => match &self.note {
                Some(DecisionNote::CrossAccount { .. }) => {
                    let missing = match st.source {
                        StatementSource::Identity(_) => "a resource policy",
                        _ => "an identity policy",
                    };
                    write!(f, "implicit DENY: {st} allows {action} on {resource}, ")?;
                    let crossing = self.crossing().unwrap_or_default();
                    write!(f, "but {crossing} also needs {missing} that allows it")
                }
                Some(DecisionNote::DelegatedToAccount { account }) => {
                    write!(f, "implicit DENY: {st} allows account {account} {action} ")?;
                    write!(
                        f,
                        "on {resource}, which leaves it to the account's identity "
                    )?;
                    write!(
                        f,
                        "policies, and none of them allows it for {}",
                        self.principal
                    )
                }
                None => write!(
                    f,
                    "implicit DENY: no statement allows {action} on {resource}"
                ),
            },
            (DecisionEffect::ImplicitDeny, None) => {
                write!(
                    f,
                    "implicit DENY: no statement allows {action} on {resource}"
                )
            }
        }
    }
}

/// How a resource-policy statement's `Principal` covers the request's principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalMatch {
    No,
    /// Through the principal's account only (`123456789012`, `arn:aws:iam::...:root`).
    ViaAccount,
    /// The principal itself (its ARN, `*`, or a `NotPrincipal` that leaves it in).
    Direct,
}

fn principal_value_matches(value: &str, id: &Identity) -> bool {
    if value == "*" {
        return true;
    }
    let Identity::Arn(arn) = id else {
        return false;
    };
    let pattern = if value.starts_with("arn:") {
        value.to_string()
    } else {
        root_arn(value)
    };
    glob(&literal_tokens(&pattern, true), arn, false)
}

fn principal_match(scope: &Scope<Principals>, principal: &Principal) -> PrincipalMatch {
    let ids = principal.identities();
    let covers = |p: &Principals, id: &Identity| {
        p.everyone || p.aws.iter().any(|v| principal_value_matches(v, id))
    };
    match scope {
        Scope::Listed(p) => {
            if ids.first().is_some_and(|id| covers(p, id)) {
                PrincipalMatch::Direct
            } else if ids.iter().skip(1).any(|id| covers(p, id)) {
                PrincipalMatch::ViaAccount
            } else {
                PrincipalMatch::No
            }
        }
        // IAM applies a NotPrincipal statement unless *every* identity of the caller is listed.
        Scope::Not(p) => {
            if ids.iter().all(|id| covers(p, id)) {
                PrincipalMatch::No
            } else {
                PrincipalMatch::Direct
            }
        }
    }
}

/// Whether `arn` is the ARN of `repo` (in any region or account).
fn is_repository_arn(arn: &str, repo: &RepoName) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "ecr", _, _, resource] => {
            resource.strip_prefix("repository/") == Some(repo.as_str())
        }
        _ => false,
    }
}

/// The account of an ARN, if it names one.
fn arn_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, _, _, account, _] if !account.is_empty() => Some(account),
        _ => None,
    }
}

impl Statement {
    /// Whether the statement's action, resource and conditions cover the request (the
    /// principal is checked separately).
    fn covers(
        &self,
        request: &Request<'_>,
        ctx: &Ctx,
        variables: bool,
        source: Option<&PolicySource>,
    ) -> bool {
        let vars = variables.then_some(ctx);
        let action_listed = self
            .action
            .items()
            .iter()
            .any(|a| glob(&literal_tokens(a, true), request.action, true));
        let action_ok = match self.action {
            Scope::Listed(_) => action_listed,
            Scope::Not(_) => !action_listed,
        };
        if !action_ok {
            return false;
        }
        let resource_ok = match &self.resource {
            Some(scope) => {
                let listed = scope
                    .items()
                    .iter()
                    .any(|r| arn_matches(r, request.resource, vars));
                match scope {
                    Scope::Listed(_) => listed,
                    Scope::Not(_) => !listed,
                }
            }
            // ECR's repository policies name no resource: they cover their repository.
            None => match source {
                Some(PolicySource::Repository(repo)) => is_repository_arn(request.resource, repo),
                _ => false,
            },
        };
        resource_ok && self.conditions.iter().all(|c| c.holds(ctx, variables))
    }
}

impl Condition {
    fn holds(&self, ctx: &Ctx, variables: bool) -> bool {
        let op = self.operator;
        let present = ctx.get(&self.key);
        if op.base == BaseOperator::Null {
            let want = if present.is_none() { "true" } else { "false" };
            return self.values.iter().any(|v| v.eq_ignore_ascii_case(want));
        }
        let Some(values) = present else {
            if op.if_exists {
                return true;
            }
            return match op.set {
                Some(SetOperator::ForAllValues) => true,
                Some(SetOperator::ForAnyValue) => false,
                None => op.base.is_negated(),
            };
        };
        let vars = (variables && op.base.takes_variables()).then_some(ctx);
        let one = |v: &String| self.test(v, vars);
        match op.set {
            Some(SetOperator::ForAnyValue) => values.iter().any(one),
            Some(SetOperator::ForAllValues) => values.iter().all(one),
            // A key with several values and no qualifier: a positive operator needs one of them
            // to match, a negated one needs none to.
            None if op.base.is_negated() => values.iter().all(one),
            None => values.iter().any(one),
        }
    }

    /// One context value against the policy's values (any may match), negation applied.
    fn test(&self, value: &str, vars: Option<&Ctx>) -> bool {
        use BaseOperator::*;
        let base = self.operator.base;
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|p| f(p));
        let matched = match base {
            StringEquals | StringNotEquals => {
                any(&|p| substitute(p, vars).is_some_and(|p| p == value))
            }
            StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => any(&|p| {
                substitute(p, vars).is_some_and(|p| p.to_lowercase() == value.to_lowercase())
            }),
            StringLike | StringNotLike => {
                any(&|p| tokens(p, vars, true).is_some_and(|t| glob(&t, value, false)))
            }
            ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => {
                any(&|p| arn_matches(p, value, vars))
            }
            Bool => any(&|p| p.eq_ignore_ascii_case(value)),
            IpAddress | NotIpAddress => match value.trim().parse::<IpAddr>() {
                Ok(ip) => any(&|p| parse_cidr(p).is_some_and(|net| cidr_contains(net, ip))),
                Err(_) => false,
            },
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => match parse_number(value) {
                Some(v) => any(&|p| parse_number(p).is_some_and(|p| compare(base, v, p))),
                None => false,
            },
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => match parse_date(value) {
                Some(v) => any(&|p| parse_date(p).is_some_and(|p| compare(base, v, p))),
                None => false,
            },
            Null => false,
        };
        matched != base.is_negated()
    }
}

/// `request op policy` for the numeric and date operators.
fn compare<T: PartialOrd>(op: BaseOperator, request: T, policy: T) -> bool {
    use BaseOperator::*;
    match op {
        NumericEquals | NumericNotEquals | DateEquals | DateNotEquals => request == policy,
        NumericLessThan | DateLessThan => request < policy,
        NumericLessThanEquals | DateLessThanEquals => request <= policy,
        NumericGreaterThan | DateGreaterThan => request > policy,
        NumericGreaterThanEquals | DateGreaterThanEquals => request >= policy,
        _ => false,
    }
}

/// Decides a request as IAM does, from the caller's identity policies (by name) and the
/// resource policies that apply (the repository's and the registry's).
///
/// Any matching `Deny` wins. Within one account, an identity-policy `Allow` or a
/// resource-policy `Allow` whose `Principal` names the caller allows; a resource policy that
/// names only the caller's account leaves the decision to the identity policies. From another
/// account, an identity policy and a resource policy must both allow. Statements are examined
/// in order (identity policies, then resource policies) and the first one of each kind that
/// matches is the one reported.
pub fn evaluate(
    request: &Request<'_>,
    identity_policies: &[(&str, &Policy)],
    resource_policies: &[(PolicySource, &Policy)],
) -> Decision {
    let ctx = Ctx::new(request);
    let mut deny: Option<StatementRef> = None;
    let mut identity_allow: Option<StatementRef> = None;
    let mut resource_allow: Option<StatementRef> = None;
    let mut account_allow: Option<StatementRef> = None;

    let reference = |source: StatementSource, index: usize, st: &Statement| StatementRef {
        source,
        index,
        sid: st.sid.clone(),
    };

    for (name, policy) in identity_policies {
        for (i, st) in policy.statements.iter().enumerate() {
            // An identity policy's statements are about the user it is attached to; a
            // statement that names principals anyway must name this one.
            let principal_ok = st
                .principal
                .as_ref()
                .is_none_or(|p| principal_match(p, request.principal) != PrincipalMatch::No);
            if !principal_ok || !st.covers(request, &ctx, policy.has_variables(), None) {
                continue;
            }
            let r = || reference(StatementSource::Identity(name.to_string()), i, st);
            match st.effect {
                Effect::Deny if deny.is_none() => deny = Some(r()),
                Effect::Allow if identity_allow.is_none() => identity_allow = Some(r()),
                _ => {}
            }
        }
    }

    for (source, policy) in resource_policies {
        for (i, st) in policy.statements.iter().enumerate() {
            let matched = match &st.principal {
                Some(p) => principal_match(p, request.principal),
                // A resource policy's statement without a principal covers no one.
                None => PrincipalMatch::No,
            };
            if matched == PrincipalMatch::No
                || !st.covers(request, &ctx, policy.has_variables(), Some(source))
            {
                continue;
            }
            let r = || reference(source.into(), i, st);
            match (st.effect, matched) {
                (Effect::Deny, _) if deny.is_none() => deny = Some(r()),
                (Effect::Allow, PrincipalMatch::Direct) if resource_allow.is_none() => {
                    resource_allow = Some(r())
                }
                (Effect::Allow, PrincipalMatch::ViaAccount) if account_allow.is_none() => {
                    account_allow = Some(r())
                }
                _ => {}
            }
        }
    }

    let mut decision = Decision {
        effect: DecisionEffect::ImplicitDeny,
        statement: None,
        also: None,
        note: None,
        principal: request.principal.to_string(),
        action: request.action.to_string(),
        resource: request.resource.to_string(),
    };
    if deny.is_some() {
        decision.effect = DecisionEffect::ExplicitDeny;
        decision.statement = deny;
        return decision;
    }

    let cross = match (request.principal.account(), arn_account(request.resource)) {
        (Some(p), Some(r)) if p != r => Some(DecisionNote::CrossAccount {
            principal_account: p.to_string(),
            resource_account: r.to_string(),
        }),
        _ => None,
    };
    match cross {
        None => {
            if let Some(st) = identity_allow.or(resource_allow) {
                decision.effect = DecisionEffect::Allow;
                decision.statement = Some(st);
            } else if let Some(st) = account_allow {
                decision.statement = Some(st);
                decision.note = Some(DecisionNote::DelegatedToAccount {
                    account: request.principal.account().unwrap_or_default().to_string(),
                });
            }
        }
        Some(note) => {
            let resource_side = resource_allow.or(account_allow);
            match (identity_allow, resource_side) {
                (Some(id), Some(res)) => {
                    decision.effect = DecisionEffect::Allow;
                    decision.statement = Some(id);
                    decision.also = Some(res);
                    decision.note = Some(note);
                }
                (Some(st), None) | (None, Some(st)) => {
                    decision.statement = Some(st);
                    decision.note = Some(note);
                }
                (None, None) => {}
            }
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCT: &str = "123456789012";
    const OTHER: &str = "444455556666";

    fn repo(name: &str) -> RepoName {
        name.parse().unwrap()
    }

    fn arn(name: &str) -> String {
        repository_arn("us-east-1", ACCT, &repo(name))
    }

    fn alice() -> Principal {
        Principal::user(ACCT, "alice")
    }

    fn bob() -> Principal {
        Principal::user(ACCT, "bob")
    }

    fn parse(text: &str, kind: PolicyKind) -> Policy {
        match Policy::parse(text, kind) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn identity(text: &str) -> Policy {
        parse(text, PolicyKind::Identity)
    }

    fn repository(text: &str) -> Policy {
        parse(text, PolicyKind::Repository)
    }

    fn no_context() -> BTreeMap<String, Vec<String>> {
        BTreeMap::new()
    }

    fn context(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    /// Decides with identity policies named `p0`, `p1`, ... and the repository policy of
    /// `team/app` (if any).
    fn decide_with(
        principal: &Principal,
        action: &str,
        resource: &str,
        ctx: &BTreeMap<String, Vec<String>>,
        identities: &[&Policy],
        repo_policy: Option<&Policy>,
    ) -> Decision {
        let names: Vec<String> = (0..identities.len()).map(|i| format!("p{i}")).collect();
        let ids: Vec<(&str, &Policy)> = names
            .iter()
            .map(String::as_str)
            .zip(identities.iter().copied())
            .collect();
        let res: Vec<(PolicySource, &Policy)> = repo_policy
            .map(|p| (PolicySource::Repository(repo("team/app")), p))
            .into_iter()
            .collect();
        let request = Request {
            principal,
            action,
            resource,
            context: ctx,
        };
        evaluate(&request, &ids, &res)
    }

    fn decide(
        principal: &Principal,
        action: &str,
        resource: &str,
        identities: &[&Policy],
        repo_policy: Option<&Policy>,
    ) -> DecisionEffect {
        decide_with(
            principal,
            action,
            resource,
            &no_context(),
            identities,
            repo_policy,
        )
        .effect
    }

    /// `(path, message)` of every error.
    fn errors(text: &str, kind: PolicyKind) -> Vec<(String, String)> {
        validate(text, kind)
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    fn error_paths(text: &str, kind: PolicyKind) -> Vec<String> {
        errors(text, kind).into_iter().map(|(p, _)| p).collect()
    }

    /// An identity policy of one statement, from its elements.
    fn identity_statement(elements: &str) -> String {
        format!(r#"{{"Version": "2012-10-17", "Statement": [{{{elements}}}]}}"#)
    }

    use DecisionEffect::{Allow, ExplicitDeny, ImplicitDeny};

    // ---- AWS's own repository policy examples -------------------------------------------

    /// ECR docs: allow another account to pull.
    const ALLOW_ACCOUNT_PULL: &str = r#"{
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowCrossAccountPull",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer"
                ]
            }
        ]
    }"#;

    /// ECR docs: allow push and pull for named IAM users.
    const ALLOW_USERS_PUSH_PULL: &str = r#"{
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowPushPull",
                "Effect": "Allow",
                "Principal": {
                    "AWS": [
                        "arn:aws:iam::123456789012:user/alice",
                        "arn:aws:iam::444455556666:user/carol"
                    ]
                },
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:CompleteLayerUpload",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:InitiateLayerUpload",
                    "ecr:PutImage",
                    "ecr:UploadLayerPart"
                ]
            }
        ]
    }"#;

    /// ECR docs: deny everyone the deleting of images and of the repository.
    const DENY_DELETE: &str = r#"{
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowAllPull",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
            },
            {
                "Sid": "DenyDelete",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["ecr:BatchDeleteImage", "ecr:DeleteRepository"]
            }
        ]
    }"#;

    const ADMIN: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#;

    #[test]
    fn aws_examples_parse_and_keep_their_text() {
        for text in [ALLOW_ACCOUNT_PULL, ALLOW_USERS_PUSH_PULL, DENY_DELETE] {
            let p = repository(text);
            assert_eq!(p.text(), text);
            assert_eq!(p.version(), Some(Version::V2012_10_17));
            assert!(p.warnings().is_empty(), "{:?}", p.warnings());
            assert!(validate(text, PolicyKind::Repository).is_empty());
        }
        let p = repository(ALLOW_USERS_PUSH_PULL);
        let st = &p.statements()[0];
        assert_eq!(st.sid.as_deref(), Some("AllowPushPull"));
        assert_eq!(st.effect, Effect::Allow);
        assert_eq!(st.resource, None);
        assert_eq!(st.path(), "Statement[0]");
        match &st.principal {
            Some(Scope::Listed(p)) => assert_eq!(p.aws.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(st.action.items().len(), 7);
    }

    #[test]
    fn a_user_named_in_the_repository_policy_may_push_without_identity_policies() {
        let p = repository(ALLOW_USERS_PUSH_PULL);
        let d = decide_with(
            &alice(),
            "ecr:PutImage",
            &arn("team/app"),
            &no_context(),
            &[],
            Some(&p),
        );
        assert_eq!(d.effect, Allow);
        assert_eq!(
            d.to_string(),
            r#"ALLOW by statement "AllowPushPull" (#0) of repository policy team/app"#
        );
        assert_eq!(
            d.statement,
            Some(StatementRef {
                source: StatementSource::Repository(repo("team/app")),
                index: 0,
                sid: Some("AllowPushPull".into()),
            })
        );
        // Not an action the statement lists.
        assert_eq!(
            decide(
                &alice(),
                "ecr:DeleteRepository",
                &arn("team/app"),
                &[],
                Some(&p)
            ),
            ImplicitDeny
        );
        // Not a user it names.
        let d = decide_with(
            &bob(),
            "ecr:PutImage",
            &arn("team/app"),
            &no_context(),
            &[],
            Some(&p),
        );
        assert_eq!(d.effect, ImplicitDeny);
        assert_eq!(d.statement, None);
        assert_eq!(
            d.to_string(),
            "implicit DENY: no statement allows ecr:PutImage on arn:aws:ecr:us-east-1:123456789012:repository/team/app"
        );
    }

    #[test]
    fn a_repository_policy_without_resource_covers_only_its_repository() {
        let p = repository(ALLOW_USERS_PUSH_PULL);
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("team/other"), &[], Some(&p)),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:PutImage",
                &arn("team/app/sub"),
                &[],
                Some(&p)
            ),
            ImplicitDeny
        );
        assert_eq!(
            decide(&alice(), "ecr:PutImage", "*", &[], Some(&p)),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:PutImage",
                "arn:aws:ecs:us-east-1:123456789012:repository/team/app",
                &[],
                Some(&p)
            ),
            ImplicitDeny
        );
        // Any region of the repository's ARN is the repository's.
        let eu = "arn:aws:ecr:eu-west-1:123456789012:repository/team/app";
        assert_eq!(decide(&alice(), "ecr:PutImage", eu, &[], Some(&p)), Allow);
    }

    #[test]
    fn an_account_principal_delegates_to_the_accounts_identity_policies() {
        let same_account = repository(&ALLOW_ACCOUNT_PULL.replace(OTHER, ACCT));
        let d = decide_with(
            &alice(),
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[],
            Some(&same_account),
        );
        assert_eq!(d.effect, ImplicitDeny);
        assert_eq!(
            d.note,
            Some(DecisionNote::DelegatedToAccount {
                account: ACCT.into()
            })
        );
        assert_eq!(d.statement.as_ref().map(|s| s.index), Some(0));
        assert_eq!(
            d.to_string(),
            r#"implicit DENY: statement "AllowCrossAccountPull" (#0) of repository policy team/app allows account 123456789012 ecr:BatchGetImage on arn:aws:ecr:us-east-1:123456789012:repository/team/app, which leaves it to the account's identity policies, and none of them allows it for arn:aws:iam::123456789012:user/alice"#
        );
        // With an identity policy that allows it, the identity policy decides.
        let admin = identity(ADMIN);
        let d = decide_with(
            &alice(),
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[&admin],
            Some(&same_account),
        );
        assert_eq!(d.effect, Allow);
        assert_eq!(d.to_string(), "ALLOW by statement #0 of identity policy p0");
        // The account itself is named directly.
        let root = Principal::Account(ACCT.into());
        assert_eq!(
            decide(
                &root,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&same_account)
            ),
            Allow
        );
    }

    #[test]
    fn cross_account_access_needs_both_sides() {
        let carol = Principal::user(OTHER, "carol");
        let pull = repository(ALLOW_ACCOUNT_PULL);
        let admin = identity(ADMIN);

        let d = decide_with(
            &carol,
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[&admin],
            Some(&pull),
        );
        assert_eq!(d.effect, Allow);
        assert_eq!(
            d.to_string(),
            r#"ALLOW by statement #0 of identity policy p0 and statement "AllowCrossAccountPull" (#0) of repository policy team/app (access from account 444455556666 to account 123456789012 needs both)"#
        );

        // The repository policy alone is not enough from another account.
        let d = decide_with(
            &carol,
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[],
            Some(&pull),
        );
        assert_eq!(d.effect, ImplicitDeny);
        assert_eq!(
            d.to_string(),
            r#"implicit DENY: statement "AllowCrossAccountPull" (#0) of repository policy team/app allows ecr:BatchGetImage on arn:aws:ecr:us-east-1:123456789012:repository/team/app, but access from account 444455556666 to account 123456789012 also needs an identity policy that allows it"#
        );

        // Nor is the identity policy alone.
        let d = decide_with(
            &carol,
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[&admin],
            None,
        );
        assert_eq!(d.effect, ImplicitDeny);
        assert_eq!(
            d.to_string(),
            "implicit DENY: statement #0 of identity policy p0 allows ecr:BatchGetImage on arn:aws:ecr:us-east-1:123456789012:repository/team/app, but access from account 444455556666 to account 123456789012 also needs a resource policy that allows it"
        );

        // Pull only: no push.
        assert_eq!(
            decide(
                &carol,
                "ecr:PutImage",
                &arn("team/app"),
                &[&admin],
                Some(&pull)
            ),
            ImplicitDeny
        );

        // A user named directly across accounts still needs the identity side.
        let users = repository(ALLOW_USERS_PUSH_PULL);
        assert_eq!(
            decide(&carol, "ecr:PutImage", &arn("team/app"), &[], Some(&users)),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &carol,
                "ecr:PutImage",
                &arn("team/app"),
                &[&admin],
                Some(&users)
            ),
            Allow
        );
    }

    #[test]
    fn an_identity_policy_allows_within_its_account() {
        let admin = identity(ADMIN);
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("team/app"), &[&admin], None),
            Allow
        );
        assert_eq!(
            decide(
                &alice(),
                "iam:CreateUser",
                "arn:aws:iam::123456789012:user/x",
                &[&admin],
                None
            ),
            Allow
        );
        // Resources without an account (or `*`) follow the same-account rule.
        assert_eq!(
            decide(&alice(), "ecr:GetAuthorizationToken", "*", &[&admin], None),
            Allow
        );
    }

    #[test]
    fn explicit_deny_beats_allow_across_policy_kinds() {
        let admin = identity(ADMIN);
        let deny_delete = repository(DENY_DELETE);

        // A repository policy's Deny beats an identity policy's Allow.
        let d = decide_with(
            &alice(),
            "ecr:BatchDeleteImage",
            &arn("team/app"),
            &no_context(),
            &[&admin],
            Some(&deny_delete),
        );
        assert_eq!(d.effect, ExplicitDeny);
        assert_eq!(
            d.to_string(),
            r#"DENY by statement "DenyDelete" (#1) of repository policy team/app"#
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:PutImage",
                &arn("team/app"),
                &[&admin],
                Some(&deny_delete)
            ),
            Allow
        );

        // An identity policy's Deny beats a repository policy's Allow.
        let ci_deny = identity(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
                {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "ecr:PutImage", "Resource": "*"}
            ]}"#,
        );
        let users = repository(ALLOW_USERS_PUSH_PULL);
        let request = Request {
            principal: &alice(),
            action: "ecr:PutImage",
            resource: &arn("team/app"),
            context: &no_context(),
        };
        let d = evaluate(
            &request,
            &[("ci-deny", &ci_deny)],
            &[(PolicySource::Repository(repo("team/app")), &users)],
        );
        assert_eq!(d.effect, ExplicitDeny);
        assert_eq!(
            d.to_string(),
            "DENY by statement #2 of identity policy ci-deny"
        );

        // The registry policy's Deny beats both.
        let registry = parse(
            r#"{"Version": "2012-10-17", "Statement": [{"Sid": "NoPushAnywhere", "Effect": "Deny",
                "Principal": {"AWS": "123456789012"}, "Action": "ecr:PutImage",
                "Resource": "arn:aws:ecr:*:123456789012:repository/*"}]}"#,
            PolicyKind::Registry,
        );
        let d = evaluate(
            &request,
            &[("admin", &admin)],
            &[
                (PolicySource::Repository(repo("team/app")), &users),
                (PolicySource::Registry, &registry),
            ],
        );
        assert_eq!(d.effect, ExplicitDeny);
        assert_eq!(
            d.to_string(),
            r#"DENY by statement "NoPushAnywhere" (#0) of registry policy"#
        );
        // An account principal's Deny covers the account's users.
        assert_eq!(
            d.statement.map(|s| s.source),
            Some(StatementSource::Registry)
        );
    }

    #[test]
    fn the_first_matching_statement_is_reported() {
        let p = identity(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Sid": "Pull", "Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "*"},
                {"Sid": "All", "Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "ecr:DeleteRepository", "Resource": "*"},
                {"Sid": "AlsoDeny", "Effect": "Deny", "Action": "ecr:Delete*", "Resource": "*"}
            ]}"#,
        );
        let d = decide_with(
            &alice(),
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[&p],
            None,
        );
        assert_eq!(
            d.to_string(),
            r#"ALLOW by statement "Pull" (#0) of identity policy p0"#
        );
        let d = decide_with(
            &alice(),
            "ecr:PutImage",
            &arn("team/app"),
            &no_context(),
            &[&p],
            None,
        );
        assert_eq!(
            d.to_string(),
            r#"ALLOW by statement "All" (#1) of identity policy p0"#
        );
        let d = decide_with(
            &alice(),
            "ecr:DeleteRepository",
            &arn("team/app"),
            &no_context(),
            &[&p],
            None,
        );
        assert_eq!(d.to_string(), "DENY by statement #2 of identity policy p0");
        let d = decide_with(
            &alice(),
            "ecr:DeleteRepositoryPolicy",
            &arn("team/app"),
            &no_context(),
            &[&p],
            None,
        );
        assert_eq!(
            d.to_string(),
            r#"DENY by statement "AlsoDeny" (#3) of identity policy p0"#
        );
        // Across policies: the first policy's statement.
        let q = identity(ADMIN);
        let d = decide_with(
            &alice(),
            "ecr:PutImage",
            &arn("team/app"),
            &no_context(),
            &[&q, &p],
            None,
        );
        assert_eq!(d.to_string(), "ALLOW by statement #0 of identity policy p0");
    }

    #[test]
    fn implicit_deny_without_policies() {
        let d = decide_with(
            &alice(),
            "ecr:PutImage",
            &arn("team/app"),
            &no_context(),
            &[],
            None,
        );
        assert_eq!(d.effect, ImplicitDeny);
        assert!(!d.is_allowed());
        assert_eq!(d.principal, "arn:aws:iam::123456789012:user/alice");
        // The account root gets nothing implicitly either.
        let root = Principal::Account(ACCT.into());
        assert_eq!(
            decide(&root, "ecr:PutImage", &arn("team/app"), &[], None),
            ImplicitDeny
        );
    }

    #[test]
    fn anonymous_callers_match_only_everyone() {
        let anon = Principal::Anonymous;
        let public = repository(DENY_DELETE);
        assert_eq!(
            decide(
                &anon,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&public)
            ),
            Allow
        );
        assert_eq!(
            decide(&anon, "ecr:PutImage", &arn("team/app"), &[], Some(&public)),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &anon,
                "ecr:BatchDeleteImage",
                &arn("team/app"),
                &[],
                Some(&public)
            ),
            ExplicitDeny
        );
        let aws_star = repository(
            r#"{"Statement": {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "ecr:BatchGetImage"}}"#,
        );
        assert_eq!(
            decide(
                &anon,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&aws_star)
            ),
            Allow
        );
        assert_eq!(
            decide(
                &anon,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&repository(ALLOW_ACCOUNT_PULL))
            ),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &anon,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&repository(ALLOW_USERS_PUSH_PULL))
            ),
            ImplicitDeny
        );
        let d = decide_with(
            &anon,
            "ecr:BatchGetImage",
            &arn("team/app"),
            &no_context(),
            &[],
            Some(&public),
        );
        assert_eq!(d.principal, "anonymous");
    }

    #[test]
    fn service_and_federated_principals_never_match_local_callers() {
        let p = repository(
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com", "Federated": ["cognito-identity.amazonaws.com"], "CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"},
                "Action": "ecr:BatchGetImage"}]}"#,
        );
        for who in [
            alice(),
            Principal::Anonymous,
            Principal::Account(ACCT.into()),
        ] {
            assert_eq!(
                decide(&who, "ecr:BatchGetImage", &arn("team/app"), &[], Some(&p)),
                ImplicitDeny
            );
        }
        match &p.statements()[0].principal {
            Some(Scope::Listed(pr)) => {
                assert_eq!(pr.service, vec!["lambda.amazonaws.com"]);
                assert_eq!(pr.federated.len(), 1);
                assert_eq!(pr.canonical_user.len(), 1);
                assert!(pr.aws.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn principal_values_account_id_root_user_and_wildcards() {
        let allow = |principal: &str| {
            repository(&format!(
                r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": {principal}}}, "Action": "ecr:*"}}]}}"#
            ))
        };
        let target = arn("team/app");
        let cases: &[(&str, &Principal, DecisionEffect)] = &[
            (r#""arn:aws:iam::123456789012:user/alice""#, &alice(), Allow),
            (
                r#""arn:aws:iam::123456789012:user/alice""#,
                &bob(),
                ImplicitDeny,
            ),
            // User names match case-sensitively.
            (
                r#""arn:aws:iam::123456789012:user/Alice""#,
                &alice(),
                ImplicitDeny,
            ),
            (r#""arn:aws:iam::123456789012:user/*""#, &alice(), Allow),
            (r#""arn:aws:iam::123456789012:user/al?ce""#, &alice(), Allow),
            (
                r#""arn:aws:iam::123456789012:user/b*""#,
                &alice(),
                ImplicitDeny,
            ),
            (
                r#"["arn:aws:iam::123456789012:user/bob", "arn:aws:iam::123456789012:user/alice"]"#,
                &alice(),
                Allow,
            ),
            (r#""*""#, &alice(), Allow),
            // A user of another account is not this one.
            (
                r#""arn:aws:iam::444455556666:user/alice""#,
                &alice(),
                ImplicitDeny,
            ),
        ];
        for (value, who, want) in cases {
            assert_eq!(
                decide(who, "ecr:PutImage", &target, &[], Some(&allow(value))),
                *want,
                "{value} for {who}"
            );
        }
        // An account, by id or root ARN (wildcards too), names the account: direct for the
        // account itself, a delegation for its users.
        let root = Principal::Account(ACCT.into());
        for value in [
            r#""123456789012""#,
            r#""arn:aws:iam::123456789012:root""#,
            r#""1234567890??""#,
            r#""arn:aws:iam::*:root""#,
        ] {
            let p = allow(value);
            assert_eq!(
                decide(&root, "ecr:PutImage", &target, &[], Some(&p)),
                Allow,
                "{value}"
            );
            let d = decide_with(
                &alice(),
                "ecr:PutImage",
                &target,
                &no_context(),
                &[],
                Some(&p),
            );
            assert_eq!(d.effect, ImplicitDeny, "{value}");
            assert!(
                matches!(d.note, Some(DecisionNote::DelegatedToAccount { .. })),
                "{value}"
            );
        }
        assert_eq!(
            decide(
                &root,
                "ecr:PutImage",
                &target,
                &[],
                Some(&allow(r#""444455556666""#))
            ),
            ImplicitDeny
        );
    }

    #[test]
    fn a_deny_naming_an_account_covers_its_users() {
        let p = repository(
            r#"{"Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
                {"Effect": "Deny", "Principal": {"AWS": "444455556666"}, "Action": "ecr:*"}
            ]}"#,
        );
        let carol = Principal::user(OTHER, "carol");
        let admin = identity(ADMIN);
        assert_eq!(
            decide(
                &carol,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[&admin],
                Some(&p)
            ),
            ExplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&p)
            ),
            Allow
        );
    }

    #[test]
    fn not_principal_leaves_out_only_callers_whose_every_identity_is_listed() {
        // AWS's example: to leave Bob out of a Deny, list both Bob and his account.
        let both = repository(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
                {"Sid": "OnlyBob", "Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:iam::123456789012:user/bob", "arn:aws:iam::123456789012:root"]}, "Action": "ecr:PutImage"}
            ]}"#,
        );
        assert_eq!(
            decide(&bob(), "ecr:PutImage", &arn("team/app"), &[], Some(&both)),
            Allow
        );
        let d = decide_with(
            &alice(),
            "ecr:PutImage",
            &arn("team/app"),
            &no_context(),
            &[],
            Some(&both),
        );
        assert_eq!(
            d.to_string(),
            r#"DENY by statement "OnlyBob" (#1) of repository policy team/app"#
        );
        assert_eq!(
            decide(
                &Principal::Anonymous,
                "ecr:PutImage",
                &arn("team/app"),
                &[],
                Some(&both)
            ),
            ExplicitDeny
        );
        assert_eq!(
            decide(
                &Principal::Account(ACCT.into()),
                "ecr:PutImage",
                &arn("team/app"),
                &[],
                Some(&both)
            ),
            Allow
        );

        // Listing Bob alone does not spare him: his request is also his account's.
        let user_only = repository(
            r#"{"Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
                {"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::123456789012:user/bob"}, "Action": "ecr:PutImage"}
            ]}"#,
        );
        assert_eq!(
            decide(
                &bob(),
                "ecr:PutImage",
                &arn("team/app"),
                &[],
                Some(&user_only)
            ),
            ExplicitDeny
        );

        // NotPrincipal "*" style: everyone listed, so the statement applies to no one.
        let everyone = repository(
            r#"{"Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
                {"Effect": "Deny", "NotPrincipal": {"AWS": "*"}, "Action": "ecr:PutImage"}
            ]}"#,
        );
        assert_eq!(
            decide(
                &Principal::Anonymous,
                "ecr:PutImage",
                &arn("team/app"),
                &[],
                Some(&everyone)
            ),
            Allow
        );

        // Allow with NotPrincipal: everyone but the listed.
        let allow_not = repository(
            r#"{"Statement": {"Effect": "Allow", "NotPrincipal": {"AWS": ["arn:aws:iam::123456789012:user/bob", "123456789012"]}, "Action": "ecr:BatchGetImage"}}"#,
        );
        assert_eq!(
            decide(
                &bob(),
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&allow_not)
            ),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&allow_not)
            ),
            Allow
        );
        assert_eq!(
            decide(
                &Principal::Anonymous,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[],
                Some(&allow_not)
            ),
            Allow
        );
    }

    #[test]
    fn not_action_applies_to_every_other_action() {
        let p = identity(&identity_statement(
            r#""Effect": "Allow", "NotAction": ["iam:*", "ecr:Delete*"], "Resource": "*""#,
        ));
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("team/app"), &[&p], None),
            Allow
        );
        assert_eq!(decide(&alice(), "ecs:RunTask", "*", &[&p], None), Allow);
        assert_eq!(
            decide(&alice(), "iam:CreateUser", "*", &[&p], None),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:DeleteRepository",
                &arn("team/app"),
                &[&p],
                None
            ),
            ImplicitDeny
        );
        // Deny with NotAction: deny everything except what is listed.
        let q = identity(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "NotAction": "ecr:BatchGetImage", "Resource": "*"}
            ]}"#,
        );
        assert_eq!(
            decide(&alice(), "ecr:BatchGetImage", &arn("team/app"), &[&q], None),
            Allow
        );
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("team/app"), &[&q], None),
            ExplicitDeny
        );
    }

    #[test]
    fn not_resource_applies_to_every_other_resource() {
        let p = identity(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "ecr:PutImage", "NotResource": "arn:aws:ecr:*:123456789012:repository/team/*"}
            ]}"#,
        );
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("team/app"), &[&p], None),
            Allow
        );
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("other/app"), &[&p], None),
            ExplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:BatchGetImage",
                &arn("other/app"),
                &[&p],
                None
            ),
            Allow
        );
        let allow_not = identity(&identity_statement(
            r#""Effect": "Allow", "Action": "ecr:*", "NotResource": ["arn:aws:ecr:*:*:repository/secret", "arn:aws:ecr:*:*:repository/secret/*"]"#,
        ));
        assert_eq!(
            decide(
                &alice(),
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[&allow_not],
                None
            ),
            Allow
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:BatchGetImage",
                &arn("secret"),
                &[&allow_not],
                None
            ),
            ImplicitDeny
        );
        assert_eq!(
            decide(
                &alice(),
                "ecr:BatchGetImage",
                &arn("secret/x"),
                &[&allow_not],
                None
            ),
            ImplicitDeny
        );
    }

    // ---- Wildcards ---------------------------------------------------------------------

    #[test]
    fn glob_edge_cases() {
        let m = |p: &str, s: &str| glob(&literal_tokens(p, true), s, false);
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("*", ""));
        assert!(m("*", "anything: at/all"));
        assert!(m("**", "x"));
        assert!(!m("?", ""));
        assert!(m("?", "é"));
        assert!(!m("?", "ab"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "acb"));
        assert!(m("a*ab", "aaab"));
        assert!(m("*a", "aaa"));
        assert!(!m("*a", "aab"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(!m("abc", "ABC"));
        assert!(glob(&literal_tokens("abc", true), "ABC", true));
        // With wildcards off (policy variables' values, StringEquals), * is a character.
        assert!(glob(&literal_tokens("a*", false), "a*", false));
        assert!(!glob(&literal_tokens("a*", false), "ab", false));
    }

    #[test]
    fn actions_match_case_insensitively_with_wildcards() {
        let target = arn("team/app");
        let cases: &[(&str, &str, bool)] = &[
            ("ecr:*", "ecr:PutImage", true),
            ("ecr:*", "ecs:RunTask", false),
            ("ecr:Batch*", "ecr:BatchGetImage", true),
            ("ecr:Batch*", "ecr:BatchDeleteImage", true),
            ("ecr:Batch*", "ecr:GetDownloadUrlForLayer", false),
            ("ecr:*Image", "ecr:PutImage", true),
            ("ecr:*Image", "ecr:PutImageTagMutability", false),
            ("ecr:?utImage", "ecr:PutImage", true),
            ("ecr:?utImage", "ecr:utImage", false),
            ("ECR:putimage", "ecr:PutImage", true),
            ("ecr:PutImage", "ECR:PUTIMAGE", true),
            ("*", "iam:CreateAccessKey", true),
            ("ecr:PutImage", "ecr:PutImageTagMutability", false),
        ];
        for (pattern, action, want) in cases {
            let p = identity(&identity_statement(&format!(
                r#""Effect": "Allow", "Action": "{pattern}", "Resource": "*""#
            )));
            let got = decide(&alice(), action, &target, &[&p], None) == Allow;
            assert_eq!(got, *want, "{pattern} vs {action}");
        }
    }

    #[test]
    fn resources_match_case_sensitively_part_by_part() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "*",
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
                true,
            ),
            ("*", "*", true),
            (
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
                true,
            ),
            (
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app2",
                false,
            ),
            (
                "arn:aws:ecr:*:123456789012:repository/team/*",
                "arn:aws:ecr:eu-west-1:123456789012:repository/team/app",
                true,
            ),
            (
                "arn:aws:ecr:*:123456789012:repository/team/*",
                "arn:aws:ecr:eu-west-1:123456789012:repository/team/a/b",
                true,
            ),
            (
                "arn:aws:ecr:*:123456789012:repository/team/*",
                "arn:aws:ecr:eu-west-1:123456789012:repository/teamx/app",
                false,
            ),
            (
                "arn:aws:ecr:*:123456789012:repository/team/*",
                "arn:aws:ecr:eu-west-1:444455556666:repository/team/app",
                false,
            ),
            (
                "arn:aws:ecr:*:123456789012:repository/Team/*",
                "arn:aws:ecr:eu-west-1:123456789012:repository/team/app",
                false,
            ),
            (
                "arn:aws:ECR:*:123456789012:repository/team/*",
                "arn:aws:ecr:eu-west-1:123456789012:repository/team/app",
                false,
            ),
            (
                "arn:aws:ecr:*:*:repository/ap?",
                "arn:aws:ecr:r:123456789012:repository/app",
                true,
            ),
            (
                "arn:aws:ecr:*:*:repository/ap?",
                "arn:aws:ecr:r:123456789012:repository/apps",
                false,
            ),
            // A part's trailing * spans the rest when the pattern stops early.
            (
                "arn:aws:ecr:*",
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
                true,
            ),
            (
                "arn:aws:ecr:us-*",
                "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
                true,
            ),
            (
                "arn:aws:ecr:us-*",
                "arn:aws:ecr:eu-west-1:123456789012:repository/team/app",
                false,
            ),
            (
                "arn:*",
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
                true,
            ),
            // A * inside one part does not reach into the next.
            (
                "arn:aws:ecr:us*1:123456789012:repository/app",
                "arn:aws:ecr:us-east-1:123456789012:repository/app",
                true,
            ),
            (
                "arn:aws:ecr:*1:123456789012:repository/app",
                "arn:aws:ecr:us-east-1:123456789012:repository/app",
                true,
            ),
            (
                "arn:aws:ecr:*:repository/app",
                "arn:aws:ecr:us-east-1:123456789012:repository/app",
                false,
            ),
            // The resource part may hold colons.
            (
                "arn:aws:ecs:*:123456789012:task-definition/web:*",
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
                true,
            ),
            (
                "arn:aws:ecs:*:123456789012:task-definition/web:*",
                "arn:aws:ecs:us-east-1:123456789012:task-definition/webx:3",
                false,
            ),
            // Not an ARN: only * covers it.
            ("arn:aws:ecr:*:*:repository/*", "*", false),
        ];
        for (pattern, resource, want) in cases {
            assert_eq!(
                arn_matches(pattern, resource, None),
                *want,
                "{pattern} vs {resource}"
            );
            if check_arn_pattern(pattern, false).is_err() {
                // Five parts without a trailing *: not an ARN, so no policy can hold it.
                assert!(!*want);
                continue;
            }
            let p = identity(&identity_statement(&format!(
                r#""Effect": "Allow", "Action": "*", "Resource": "{pattern}""#
            )));
            assert_eq!(
                decide(&alice(), "ecr:PutImage", resource, &[&p], None) == Allow,
                *want,
                "{pattern} vs {resource}"
            );
        }
    }

    // ---- Conditions --------------------------------------------------------------------

    /// Whether an Allow statement with this `Condition` block allows alice `ecr:PutImage` on
    /// team/app with this context.
    fn condition_allows(condition: &str, ctx: &[(&str, &[&str])]) -> bool {
        let p = identity(&identity_statement(&format!(
            r#""Effect": "Allow", "Action": "ecr:PutImage", "Resource": "arn:aws:ecr:*:*:repository/${{aws:username}}/*", "Condition": {condition}"#
        ).replace("${aws:username}/*", "*")));
        decide_with(
            &alice(),
            "ecr:PutImage",
            &arn("team/app"),
            &context(ctx),
            &[&p],
            None,
        )
        .effect
            == Allow
    }

    #[test]
    fn string_conditions() {
        let eq = r#"{"StringEquals": {"aws:SourceVpc": ["vpc-1", "vpc-2"]}}"#;
        assert!(condition_allows(eq, &[("aws:SourceVpc", &["vpc-2"])]));
        assert!(!condition_allows(eq, &[("aws:SourceVpc", &["VPC-2"])]));
        assert!(!condition_allows(eq, &[("aws:SourceVpc", &["vpc-3"])]));
        assert!(
            !condition_allows(eq, &[]),
            "a missing key fails a positive operator"
        );

        let ne = r#"{"StringNotEquals": {"aws:SourceVpc": ["vpc-1", "vpc-2"]}}"#;
        assert!(condition_allows(ne, &[("aws:SourceVpc", &["vpc-3"])]));
        assert!(!condition_allows(ne, &[("aws:SourceVpc", &["vpc-1"])]));
        assert!(
            condition_allows(ne, &[]),
            "a missing key passes a negated operator"
        );

        let ic = r#"{"StringEqualsIgnoreCase": {"ecr:ResourceTag/team": "Platform"}}"#;
        assert!(condition_allows(
            ic,
            &[("ecr:ResourceTag/team", &["PLATFORM"])]
        ));
        assert!(!condition_allows(
            ic,
            &[("ecr:ResourceTag/team", &["infra"])]
        ));
        assert!(!condition_allows(ic, &[]));
        let nic = r#"{"StringNotEqualsIgnoreCase": {"ecr:ResourceTag/team": "Platform"}}"#;
        assert!(!condition_allows(
            nic,
            &[("ecr:ResourceTag/team", &["platform"])]
        ));
        assert!(condition_allows(
            nic,
            &[("ecr:ResourceTag/team", &["infra"])]
        ));
        assert!(condition_allows(nic, &[]));

        let like = r#"{"StringLike": {"aws:userAgent": ["docker/*", "skopeo/1.?"]}}"#;
        assert!(condition_allows(
            like,
            &[("aws:userAgent", &["docker/27.0 go/1.22"])]
        ));
        assert!(condition_allows(
            like,
            &[("aws:userAgent", &["skopeo/1.9"])]
        ));
        assert!(!condition_allows(
            like,
            &[("aws:userAgent", &["skopeo/1.10"])]
        ));
        assert!(!condition_allows(
            like,
            &[("aws:userAgent", &["Docker/27"])]
        ));
        assert!(!condition_allows(like, &[]));
        let not_like = r#"{"StringNotLike": {"aws:userAgent": "curl/*"}}"#;
        assert!(condition_allows(
            not_like,
            &[("aws:userAgent", &["docker/27"])]
        ));
        assert!(!condition_allows(
            not_like,
            &[("aws:userAgent", &["curl/8.0"])]
        ));
        assert!(condition_allows(not_like, &[]));
    }

    #[test]
    fn arn_conditions() {
        // aws:PrincipalArn comes from the principal.
        let like = r#"{"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/al*"}}"#;
        assert!(condition_allows(like, &[]));
        let equals =
            r#"{"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::123456789012:user/alice"}}"#;
        assert!(condition_allows(equals, &[]));
        let other = r#"{"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::123456789012:user/bob"}}"#;
        assert!(!condition_allows(other, &[]));
        let not_like = r#"{"ArnNotLike": {"aws:SourceArn": "arn:aws:ecs:*:123456789012:task/*"}}"#;
        assert!(condition_allows(not_like, &[]));
        assert!(!condition_allows(
            not_like,
            &[(
                "aws:SourceArn",
                &["arn:aws:ecs:us-east-1:123456789012:task/default/abc"]
            )]
        ));
        assert!(condition_allows(
            not_like,
            &[(
                "aws:SourceArn",
                &["arn:aws:ecs:us-east-1:444455556666:task/default/abc"]
            )]
        ));
        let not_equals = r#"{"ArnNotEquals": {"aws:SourceArn": "arn:aws:ecs:us-east-1:123456789012:task/default/abc"}}"#;
        assert!(!condition_allows(
            not_equals,
            &[(
                "aws:SourceArn",
                &["arn:aws:ecs:us-east-1:123456789012:task/default/abc"]
            )]
        ));
        // An ARN condition's part matching: the account part does not swallow the rest.
        let parts = r#"{"ArnLike": {"aws:SourceArn": "arn:aws:ecs:us-east-1:*"}}"#;
        assert!(condition_allows(
            parts,
            &[(
                "aws:SourceArn",
                &["arn:aws:ecs:us-east-1:123456789012:task/x"]
            )]
        ));
        assert!(!condition_allows(
            parts,
            &[("aws:SourceArn", &["not-an-arn"])]
        ));
    }

    #[test]
    fn bool_and_null_conditions() {
        let secure = r#"{"Bool": {"aws:SecureTransport": "true"}}"#;
        assert!(condition_allows(
            secure,
            &[("aws:SecureTransport", &["true"])]
        ));
        assert!(condition_allows(
            secure,
            &[("aws:SecureTransport", &["True"])]
        ));
        assert!(!condition_allows(
            secure,
            &[("aws:SecureTransport", &["false"])]
        ));
        assert!(!condition_allows(secure, &[]));
        // JSON booleans are accepted as values.
        let insecure = r#"{"Bool": {"aws:SecureTransport": false}}"#;
        assert!(condition_allows(
            insecure,
            &[("aws:SecureTransport", &["false"])]
        ));
        assert!(!condition_allows(
            insecure,
            &[("aws:SecureTransport", &["true"])]
        ));

        let absent = r#"{"Null": {"aws:SourceIp": "true"}}"#;
        assert!(condition_allows(absent, &[]));
        assert!(!condition_allows(
            absent,
            &[("aws:SourceIp", &["10.0.0.1"])]
        ));
        let present = r#"{"Null": {"aws:SourceIp": false}}"#;
        assert!(condition_allows(
            present,
            &[("aws:SourceIp", &["10.0.0.1"])]
        ));
        assert!(!condition_allows(present, &[]));
        // An empty value list is a missing key.
        assert!(condition_allows(absent, &[("aws:SourceIp", &[])]));
        // Null sees derived keys: alice has a user name.
        assert!(condition_allows(
            r#"{"Null": {"aws:username": "false"}}"#,
            &[]
        ));
    }

    #[test]
    fn if_exists_conditions() {
        let c = r#"{"StringEqualsIfExists": {"ecr:ResourceTag/env": "dev"}}"#;
        assert!(condition_allows(c, &[]), "missing: true");
        assert!(condition_allows(c, &[("ecr:ResourceTag/env", &["dev"])]));
        assert!(!condition_allows(c, &[("ecr:ResourceTag/env", &["prod"])]));
        let n = r#"{"StringNotLikeIfExists": {"ecr:ResourceTag/env": "prod*"}}"#;
        assert!(condition_allows(n, &[]));
        assert!(!condition_allows(
            n,
            &[("ecr:ResourceTag/env", &["production"])]
        ));
        let b = r#"{"BoolIfExists": {"aws:MultiFactorAuthPresent": "true"}}"#;
        assert!(condition_allows(b, &[]));
        assert!(!condition_allows(
            b,
            &[("aws:MultiFactorAuthPresent", &["false"])]
        ));
        let ip = r#"{"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}"#;
        assert!(condition_allows(ip, &[]));
        assert!(!condition_allows(ip, &[("aws:SourceIp", &["192.168.1.1"])]));
    }

    #[test]
    fn ip_numeric_and_date_conditions() {
        let ip = r#"{"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]}}"#;
        assert!(condition_allows(
            ip,
            &[("aws:SourceIp", &["203.0.113.200"])]
        ));
        assert!(condition_allows(ip, &[("aws:SourceIp", &["198.51.100.7"])]));
        assert!(condition_allows(
            ip,
            &[("aws:SourceIp", &["2001:db8:1::5"])]
        ));
        assert!(!condition_allows(ip, &[("aws:SourceIp", &["203.0.114.1"])]));
        assert!(!condition_allows(
            ip,
            &[("aws:SourceIp", &["198.51.100.8"])]
        ));
        assert!(!condition_allows(ip, &[("aws:SourceIp", &["not an ip"])]));
        assert!(!condition_allows(ip, &[]));
        let not_ip = r#"{"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#;
        assert!(condition_allows(
            not_ip,
            &[("aws:SourceIp", &["192.168.0.1"])]
        ));
        assert!(!condition_allows(
            not_ip,
            &[("aws:SourceIp", &["10.1.2.3"])]
        ));
        assert!(condition_allows(not_ip, &[]));
        assert!(condition_allows(
            r#"{"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}"#,
            &[("aws:SourceIp", &["8.8.8.8"])]
        ));

        let age = |op: &str, v: &str| {
            condition_allows(
                &format!(r#"{{"{op}": {{"aws:MultiFactorAuthAge": {v}}}}}"#),
                &[("aws:MultiFactorAuthAge", &["3600"])],
            )
        };
        assert!(age("NumericEquals", "3600"));
        assert!(age("NumericEquals", "\"3600.0\""));
        assert!(!age("NumericNotEquals", "3600"));
        assert!(age("NumericLessThan", "3601"));
        assert!(!age("NumericLessThan", "3600"));
        assert!(age("NumericLessThanEquals", "3600"));
        assert!(age("NumericGreaterThan", "60"));
        assert!(!age("NumericGreaterThan", "3600"));
        assert!(age("NumericGreaterThanEquals", "3600"));

        let now = [("aws:CurrentTime", &["2025-06-01T12:00:00Z"][..])];
        let at = |op: &str, v: &str| {
            condition_allows(
                &format!(r#"{{"{op}": {{"aws:CurrentTime": "{v}"}}}}"#),
                &now,
            )
        };
        assert!(at("DateLessThan", "2025-12-31T23:59:59Z"));
        assert!(!at("DateLessThan", "2025-01-01"));
        assert!(at("DateGreaterThan", "2025-01-01"));
        assert!(at("DateGreaterThanEquals", "2025-06-01T12:00:00Z"));
        assert!(at("DateLessThanEquals", "2025-06-01T14:00:00+02:00"));
        assert!(at("DateEquals", "1748779200"));
        assert!(at("DateNotEquals", "2025-06-01"));
        assert!(!condition_allows(
            r#"{"DateLessThan": {"aws:CurrentTime": "2030-01-01"}}"#,
            &[]
        ));
    }

    #[test]
    fn several_values_or_several_keys_and_operators_and() {
        let c = r#"{
            "StringEquals": {"aws:SourceVpc": ["vpc-1", "vpc-2"], "ecr:ResourceTag/team": "platform"},
            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}
        }"#;
        let all: &[(&str, &[&str])] = &[
            ("aws:SourceVpc", &["vpc-1"]),
            ("ecr:ResourceTag/team", &["platform"]),
            ("aws:SourceIp", &["10.2.3.4"]),
        ];
        assert!(condition_allows(c, all));
        for drop in 0..all.len() {
            let fewer: Vec<(&str, &[&str])> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, kv)| *kv)
                .collect();
            assert!(!condition_allows(c, &fewer), "without {}", all[drop].0);
        }
        let mut wrong = all.to_vec();
        wrong[2] = ("aws:SourceIp", &["192.168.0.1"]);
        assert!(!condition_allows(c, &wrong));
    }

    #[test]
    fn condition_keys_are_case_insensitive() {
        assert!(condition_allows(
            r#"{"StringEquals": {"AWS:UserName": "alice"}}"#,
            &[]
        ));
        assert!(condition_allows(
            r#"{"StringEquals": {"aws:sourcevpc": "vpc-1"}}"#,
            &[("AWS:SourceVpc", &["vpc-1"])]
        ));
        // The values are not.
        assert!(!condition_allows(
            r#"{"StringEquals": {"aws:username": "Alice"}}"#,
            &[]
        ));
    }

    #[test]
    fn derived_keys_and_given_ones() {
        assert!(condition_allows(
            r#"{"StringEquals": {"aws:PrincipalAccount": "123456789012", "aws:PrincipalType": "User"}}"#,
            &[]
        ));
        // A key the caller gives wins over the derived one.
        assert!(condition_allows(
            r#"{"StringEquals": {"aws:username": "eve"}}"#,
            &[("aws:username", &["eve"])]
        ));
        let anon = identity(&identity_statement(
            r#""Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"aws:PrincipalType": "Anonymous"}, "Null": {"aws:username": "true", "aws:PrincipalArn": "true"}}"#,
        ));
        assert_eq!(
            decide(
                &Principal::Anonymous,
                "ecr:BatchGetImage",
                &arn("team/app"),
                &[&anon],
                None
            ),
            Allow
        );
    }

    #[test]
    fn multivalued_keys_and_set_operators() {
        let tags = |v: &[&'static str]| -> Vec<(&'static str, &[&'static str])> {
            vec![("aws:TagKeys", Box::leak(v.to_vec().into_boxed_slice()))]
        };
        let any = r#"{"ForAnyValue:StringEquals": {"aws:TagKeys": ["team", "env"]}}"#;
        assert!(condition_allows(any, &tags(&["owner", "env"])));
        assert!(!condition_allows(any, &tags(&["owner"])));
        assert!(!condition_allows(any, &[]), "ForAnyValue: missing is false");
        let all = r#"{"ForAllValues:StringEquals": {"aws:TagKeys": ["team", "env"]}}"#;
        assert!(condition_allows(all, &tags(&["team", "env"])));
        assert!(!condition_allows(all, &tags(&["team", "owner"])));
        assert!(condition_allows(all, &[]), "ForAllValues: missing is true");
        let all_like = r#"{"ForAllValues:StringLike": {"aws:TagKeys": "ci-*"}}"#;
        assert!(condition_allows(all_like, &tags(&["ci-a", "ci-b"])));
        assert!(!condition_allows(all_like, &tags(&["ci-a", "b"])));
        let any_not = r#"{"ForAnyValue:StringNotEquals": {"aws:TagKeys": "team"}}"#;
        assert!(condition_allows(any_not, &tags(&["team", "env"])));
        assert!(!condition_allows(any_not, &tags(&["team"])));
        assert!(!condition_allows(any_not, &[]));
        let any_if = r#"{"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": "team"}}"#;
        assert!(condition_allows(any_if, &[]));
        // Without a qualifier: a positive operator needs one value to match, a negated one none.
        let plain = r#"{"StringEquals": {"aws:TagKeys": "team"}}"#;
        assert!(condition_allows(plain, &tags(&["env", "team"])));
        let plain_not = r#"{"StringNotEquals": {"aws:TagKeys": "team"}}"#;
        assert!(!condition_allows(plain_not, &tags(&["env", "team"])));
        assert!(condition_allows(plain_not, &tags(&["env", "owner"])));
    }

    // ---- Policy variables --------------------------------------------------------------

    #[test]
    fn policy_variables_in_resources_and_conditions() {
        let own = |version: &str| {
            identity(&format!(
                r#"{{{version} "Statement": {{"Effect": "Allow", "Action": "ecr:*",
                    "Resource": "arn:aws:ecr:*:123456789012:repository/${{aws:username}}/*"}}}}"#
            ))
        };
        let v2012 = own(r#""Version": "2012-10-17","#);
        assert_eq!(
            decide(&alice(), "ecr:PutImage", &arn("alice/app"), &[&v2012], None),
            Allow
        );
        assert_eq!(
            decide(&bob(), "ecr:PutImage", &arn("alice/app"), &[&v2012], None),
            ImplicitDeny
        );
        assert_eq!(
            decide(&bob(), "ecr:PutImage", &arn("bob/app"), &[&v2012], None),
            Allow
        );
        // The account has no user name: the variable has no value and matches nothing.
        let root = Principal::Account(ACCT.into());
        assert_eq!(
            decide(
                &root,
                "ecr:PutImage",
                "arn:aws:ecr:r:123456789012:repository/${aws:username}/x",
                &[&v2012],
                None
            ),
            ImplicitDeny
        );

        // Without Version 2012-10-17 the text is literal, and a warning says so.
        for version in ["", r#""Version": "2008-10-17","#] {
            let old = own(version);
            assert_eq!(
                decide(&alice(), "ecr:PutImage", &arn("alice/app"), &[&old], None),
                ImplicitDeny
            );
            assert_eq!(
                decide(
                    &alice(),
                    "ecr:PutImage",
                    "arn:aws:ecr:r:123456789012:repository/${aws:username}/x",
                    &[&old],
                    None
                ),
                Allow
            );
            let w = old.warnings();
            assert_eq!(w.len(), 1, "{w:?}");
            assert_eq!(w[0].path, "Statement");
            assert!(w[0].message.contains("2012-10-17"));
        }
        assert!(v2012.warnings().is_empty());

        // In condition values, with a default, and the escapes for * ? $.
        assert!(condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/owner": "${aws:username}"}}"#,
            &[("ecr:ResourceTag/owner", &["alice"])]
        ));
        assert!(!condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/owner": "${aws:username}"}}"#,
            &[("ecr:ResourceTag/owner", &["bob"])]
        ));
        assert!(condition_allows(
            r#"{"StringLike": {"ecr:ResourceTag/path": "${aws:username}/*"}}"#,
            &[("ecr:ResourceTag/path", &["alice/x"])]
        ));
        assert!(condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/t": "${ecr:ResourceTag/none, 'fallback'}"}}"#,
            &[("ecr:ResourceTag/t", &["fallback"])]
        ));
        assert!(condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/t": "${x, 'it''s'}"}}"#,
            &[("ecr:ResourceTag/t", &["it's"])]
        ));
        assert!(condition_allows(
            r#"{"StringLike": {"ecr:ResourceTag/t": "a${*}b${?}${$}"}}"#,
            &[("ecr:ResourceTag/t", &["a*b?$"])]
        ));
        assert!(!condition_allows(
            r#"{"StringLike": {"ecr:ResourceTag/t": "a${*}b"}}"#,
            &[("ecr:ResourceTag/t", &["axxb"])]
        ));
        // A substituted value's wildcards are literal.
        assert!(!condition_allows(
            r#"{"StringLike": {"ecr:ResourceTag/t": "${ecr:ResourceTag/p}"}}"#,
            &[
                ("ecr:ResourceTag/t", &["abc"]),
                ("ecr:ResourceTag/p", &["a*"])
            ]
        ));
        // A variable without a value matches nothing: a negated operator then holds.
        assert!(!condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/t": "${ecr:ResourceTag/none}"}}"#,
            &[("ecr:ResourceTag/t", &["x"])]
        ));
        assert!(condition_allows(
            r#"{"StringNotEquals": {"ecr:ResourceTag/t": "${ecr:ResourceTag/none}"}}"#,
            &[("ecr:ResourceTag/t", &["x"])]
        ));
        // Nor does a key with several values.
        assert!(!condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/t": "${aws:TagKeys}"}}"#,
            &[("ecr:ResourceTag/t", &["a"]), ("aws:TagKeys", &["a", "b"])]
        ));
        // The variable's key is case-insensitive.
        assert!(condition_allows(
            r#"{"StringEquals": {"ecr:ResourceTag/owner": "${AWS:UserName}"}}"#,
            &[("ecr:ResourceTag/owner", &["alice"])]
        ));
    }

    // ---- Validation, every error with its path -----------------------------------------

    #[test]
    fn unknown_elements_are_named_by_path() {
        let text = r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
            {"Efect": "Allow", "Action": "ecr:*", "Resource": "*"}
        ]}"#;
        let errs = errors(text, PolicyKind::Identity);
        assert_eq!(
            errs,
            vec![
                (
                    "Statement[1].Efect".to_string(),
                    "unknown element; did you mean Effect?".to_string()
                ),
                ("Statement[1]".to_string(), "Effect is required".to_string()),
            ]
        );
        assert_eq!(
            error_paths(
                r#"{"Versoin": "2012-10-17", "Statement": []}"#,
                PolicyKind::Identity
            ),
            vec!["Versoin", "Statement"]
        );
        let e = errors(
            r#"{"Policy": 1, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
            PolicyKind::Identity,
        );
        assert_eq!(
            e,
            vec![(
                "Policy".into(),
                "unknown element; expected one of Version, Id, Statement".into()
            )]
        );
        // A single statement object has the path Statement.
        assert_eq!(
            error_paths(
                r#"{"Statement": {"Effect": "Allow", "action": "*", "Resource": "*"}}"#,
                PolicyKind::Identity
            ),
            vec!["Statement.action", "Statement"]
        );
        assert_eq!(
            error_paths(
                r#"{"Statement": {"Effect": "Allow", "Principal": {"Aws": "*"}, "Action": "*"}}"#,
                PolicyKind::Repository
            ),
            vec!["Statement.Principal.Aws"]
        );
    }

    #[test]
    fn statement_element_errors() {
        let id = PolicyKind::Identity;
        let cases: &[(&str, &str, &str)] = &[
            (r#""Effect": "allow", "Action": "*", "Resource": "*""#, "Statement[0].Effect", r#""allow" is not Allow or Deny"#),
            (r#""Effect": true, "Action": "*", "Resource": "*""#, "Statement[0].Effect", "true is not Allow or Deny"),
            (r#""Effect": "Allow", "Action": "*", "NotAction": "ecr:*", "Resource": "*""#, "Statement[0]", "Action and NotAction cannot both be given"),
            (r#""Effect": "Allow", "Resource": "*""#, "Statement[0]", "Action or NotAction is required"),
            (r#""Effect": "Allow", "Action": "*""#, "Statement[0]", "Resource or NotResource is required in an identity policy"),
            (r#""Effect": "Allow", "Action": "*", "Resource": "*", "NotResource": "*""#, "Statement[0]", "Resource and NotResource cannot both be given"),
            (r#""Effect": "Allow", "Action": ["ecr:PutImage", 3], "Resource": "*""#, "Statement[0].Action[1]", "must be a string, not a number"),
            (r#""Effect": "Allow", "Action": [], "Resource": "*""#, "Statement[0].Action", "must not be an empty array"),
            (r#""Effect": "Allow", "Action": {"a": 1}, "Resource": "*""#, "Statement[0].Action", "must be a string or an array of strings, not an object"),
            (r#""Effect": "Allow", "Action": "ecr", "Resource": "*""#, "Statement[0].Action", r#""ecr" is not an action: expected service:Action such as ecr:BatchGetImage, ecr:Batch* or *"#),
            (r#""Effect": "Allow", "Action": ["ecr:*", "ec*:Get"], "Resource": "*""#, "Statement[0].Action[1]", r#""ec*:Get" is not an action: the service prefix takes letters, digits and '-', no wildcards"#),
            (r#""Effect": "Allow", "Action": "ecr:", "Resource": "*""#, "Statement[0].Action", r#""ecr:" is not an action: expected service:Action such as ecr:BatchGetImage, ecr:Batch* or *"#),
            (r#""Effect": "Allow", "NotAction": "ecr:Put Image", "Resource": "*""#, "Statement[0].NotAction", r#""ecr:Put Image" is not an action: expected service:Action such as ecr:BatchGetImage, ecr:Batch* or *"#),
            (r#""Effect": "Allow", "Action": "*", "Resource": "team/app""#, "Statement[0].Resource", r#""team/app" is not an ARN (arn:partition:service:region:account:resource) or *"#),
            (r#""Effect": "Allow", "Action": "*", "Resource": ["*", "arn:aws:ecr:us-east-1"]"#, "Statement[1].Resource[1]", ""),
            (r#""Effect": "Allow", "Action": "*", "NotResource": "arn:aws:ecr""#, "Statement[0].NotResource", r#""arn:aws:ecr" is not an ARN (arn:partition:service:region:account:resource) or *"#),
            (r#""Sid": 7, "Effect": "Allow", "Action": "*", "Resource": "*""#, "Statement[0].Sid", "must be a string, not a number"),
            (r#""Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*""#, "Statement[0]", "an identity policy cannot have a Principal or NotPrincipal: the principal is the user it is attached to"),
            (r#""Effect": "Allow", "NotPrincipal": {"AWS": "*"}, "Action": "*", "Resource": "*""#, "Statement[0]", "an identity policy cannot have a Principal or NotPrincipal: the principal is the user it is attached to"),
            (r#""Effect": "Allow", "Action": "*", "Resource": "*", "Effect": "Deny""#, "Statement[0].Effect", "duplicate element"),
        ];
        for (elements, path, message) in cases {
            let (text, path) = if path.starts_with("Statement[1]") {
                (
                    format!(
                        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Deny", "Action": "*", "Resource": "*"}}, {{{elements}}}]}}"#
                    ),
                    path.to_string(),
                )
            } else {
                (identity_statement(elements), path.to_string())
            };
            let errs = errors(&text, id);
            assert!(
                errs.iter()
                    .any(|(p, m)| *p == path && (message.is_empty() || m == message)),
                "{elements}: {errs:?}"
            );
            assert!(Policy::parse(&text, id).is_err());
        }
    }

    #[test]
    fn principal_errors_and_kinds() {
        let repo_kind = PolicyKind::Repository;
        let st = |principal: &str| {
            format!(r#"{{"Statement": [{{"Effect": "Allow", {principal} "Action": "ecr:*"}}]}}"#)
        };
        assert_eq!(
            errors(&st(""), repo_kind),
            vec![(
                "Statement[0]".into(),
                "a repository policy needs a Principal (or NotPrincipal)".into()
            )]
        );
        assert_eq!(
            errors(&st(""), PolicyKind::Registry),
            vec![
                (
                    "Statement[0]".into(),
                    "a registry policy needs a Principal (or NotPrincipal)".into()
                ),
                (
                    "Statement[0]".into(),
                    "Resource or NotResource is required in a registry policy".into()
                ),
            ]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": "bob","#), repo_kind),
            vec!["Statement[0].Principal"]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": {"AWS": "bob"},"#), repo_kind),
            vec!["Statement[0].Principal.AWS"]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": {"AWS": ["*", "12345"]},"#), repo_kind),
            vec!["Statement[0].Principal.AWS[1]"]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": {"AWS": 123456789012},"#), repo_kind),
            vec!["Statement[0].Principal.AWS"]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": {"Foo": "x"},"#), repo_kind),
            vec!["Statement[0].Principal.Foo"]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": {},"#), repo_kind),
            vec!["Statement[0].Principal"]
        );
        assert_eq!(
            error_paths(&st(r#""Principal": ["*"],"#), repo_kind),
            vec!["Statement[0].Principal"]
        );
        assert_eq!(
            errors(&st(r#""Principal": "*", "NotPrincipal": "*","#), repo_kind),
            vec![(
                "Statement[0]".into(),
                "Principal and NotPrincipal cannot both be given".into()
            )]
        );
        // Valid forms.
        for ok in [
            r#""Principal": "*","#,
            r#""Principal": {"AWS": "*"},"#,
            r#""Principal": {"AWS": "123456789012"},"#,
            r#""Principal": {"AWS": ["arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:user/a", "arn:aws:iam::123456789012:role/r"]},"#,
            r#""Principal": {"Service": "ecs-tasks.amazonaws.com"},"#,
            r#""NotPrincipal": {"AWS": "arn:aws:iam::123456789012:user/a"},"#,
        ] {
            assert!(validate(&st(ok), repo_kind).is_empty(), "{ok}");
        }
        // A repository policy may leave out Resource; an identity or registry policy may not.
        assert!(validate(ALLOW_ACCOUNT_PULL, repo_kind).is_empty());
    }

    #[test]
    fn condition_errors() {
        let with = |condition: &str| {
            identity_statement(&format!(
                r#""Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {condition}"#
            ))
        };
        let id = PolicyKind::Identity;
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"StringEqual": {"aws:username": "a"}}"#,
                "Statement[0].Condition.StringEqual",
                r#"unknown condition operator "StringEqual"; did you mean StringEquals?"#,
            ),
            (
                r#"{"Frobnicate": {"k": "a"}}"#,
                "Statement[0].Condition.Frobnicate",
                r#"unknown condition operator "Frobnicate""#,
            ),
            (
                r#"{"ForSomeValues:StringEquals": {"k": "a"}}"#,
                "Statement[0].Condition.ForSomeValues:StringEquals",
                r#"unknown condition operator "ForSomeValues:StringEquals""#,
            ),
            (
                r#"{"BinaryEquals": {"k": "QmluYXJ5"}}"#,
                "Statement[0].Condition.BinaryEquals",
                "the condition operator BinaryEquals is not supported by ecrl",
            ),
            (
                r#"{"NullIfExists": {"k": "true"}}"#,
                "Statement[0].Condition.NullIfExists",
                r#""NullIfExists": Null takes neither IfExists nor ForAnyValue/ForAllValues"#,
            ),
            (
                r#"{"ForAnyValue:Null": {"k": "true"}}"#,
                "Statement[0].Condition.ForAnyValue:Null",
                r#""ForAnyValue:Null": Null takes neither IfExists nor ForAnyValue/ForAllValues"#,
            ),
            (
                r#"{"Bool": {"aws:SecureTransport": "yes"}}"#,
                "Statement[0].Condition.Bool.aws:SecureTransport",
                r#""yes" is not true or false"#,
            ),
            (
                r#"{"Null": {"k": ["true", "maybe"]}}"#,
                "Statement[0].Condition.Null.k[1]",
                r#""maybe" is not true or false"#,
            ),
            (
                r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}"#,
                "Statement[0].Condition.IpAddress.aws:SourceIp",
                r#""10.0.0.0/33" is not an IP address or CIDR block such as 203.0.113.0/24"#,
            ),
            (
                r#"{"NumericLessThan": {"k": "ten"}}"#,
                "Statement[0].Condition.NumericLessThan.k",
                r#""ten" is not a number"#,
            ),
            (
                r#"{"DateLessThan": {"aws:CurrentTime": "next tuesday"}}"#,
                "Statement[0].Condition.DateLessThan.aws:CurrentTime",
                r#""next tuesday" is not a date: use ISO 8601 (2025-01-31T12:00:00Z) or epoch seconds"#,
            ),
            (
                r#"{"ArnLike": {"aws:SourceArn": "task/*"}}"#,
                "Statement[0].Condition.ArnLike.aws:SourceArn",
                r#""task/*" is not an ARN (arn:partition:service:region:account:resource) or *"#,
            ),
            (
                r#"{"StringEquals": {"k": []}}"#,
                "Statement[0].Condition.StringEquals.k",
                "needs at least one value",
            ),
            (
                r#"{"StringEquals": {"k": {"a": "b"}}}"#,
                "Statement[0].Condition.StringEquals.k",
                "must be a string, number or boolean or an array of them, not an object",
            ),
            (
                r#"{"StringEquals": {"k": ["a", null]}}"#,
                "Statement[0].Condition.StringEquals.k[1]",
                "must be a string, number or boolean, not null",
            ),
            (
                r#"{"StringEquals": {"": "a"}}"#,
                "Statement[0].Condition.StringEquals.",
                "the condition key is empty",
            ),
            (
                r#"{"StringEquals": "a"}"#,
                "Statement[0].Condition.StringEquals",
                "Statement[0].Condition.StringEquals must be an object, not a string",
            ),
            (
                r#"["StringEquals"]"#,
                "Statement[0].Condition",
                "Statement[0].Condition must be an object, not an array",
            ),
            (
                r#"{"StringEquals": {"k": "a", "k": "b"}}"#,
                "Statement[0].Condition.StringEquals.k",
                "duplicate element",
            ),
            (
                r#"{"StringEquals": {"k": "${aws:username"}}"#,
                "Statement[0].Condition.StringEquals.k",
                r#""${aws:username" has a policy variable without its closing '}'"#,
            ),
            (
                r#"{"StringEquals": {"k": "${}"}}"#,
                "Statement[0].Condition.StringEquals.k",
                r#""${}": ${} does not name a condition key"#,
            ),
            (
                r#"{"StringEquals": {"k": "${a, default}"}}"#,
                "Statement[0].Condition.StringEquals.k",
                r#""${a, default}": the default of ${a, default} must be in single quotes ('' for a quote)"#,
            ),
        ];
        for (condition, path, message) in cases {
            let errs = errors(&with(condition), id);
            assert_eq!(
                errs,
                vec![(path.to_string(), message.to_string())],
                "{condition}"
            );
        }
        // In a 2008 policy, ${ is text.
        let old = r#"{"Version": "2008-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ecr:*:*:repository/${x", "Condition": {"StringEquals": {"k": "${"}}}}"#;
        assert!(validate(old, id).is_empty());
        // Empty Condition blocks are valid (and always hold).
        assert!(validate(&with("{}"), id).is_empty());
    }

    #[test]
    fn document_errors() {
        let id = PolicyKind::Identity;
        assert_eq!(
            errors(r#"{"Version": "2012-10-18", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#, id),
            vec![("Version".into(), r#""2012-10-18" is not a policy language version: use "2012-10-17" (or "2008-10-17")"#.into())]
        );
        assert_eq!(
            error_paths(
                r#"{"Version": 2012, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
                id
            ),
            vec!["Version"]
        );
        assert_eq!(
            error_paths(
                r#"{"Id": 1, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
                id
            ),
            vec!["Id"]
        );
        assert_eq!(
            errors(r#"{"Version": "2012-10-17"}"#, id),
            vec![("".into(), "Statement is required".into())]
        );
        assert_eq!(
            errors(r#"{"Statement": []}"#, id),
            vec![(
                "Statement".into(),
                "at least one statement is required".into()
            )]
        );
        assert_eq!(error_paths(r#"{"Statement": "x"}"#, id), vec!["Statement"]);
        assert_eq!(
            error_paths(r#"{"Statement": ["x"]}"#, id),
            vec!["Statement[0]"]
        );
        assert_eq!(
            errors("[]", id),
            vec![(
                "".into(),
                "the policy document must be an object, not an array".into()
            )]
        );
        assert_eq!(
            errors("", id),
            vec![("".into(), "the policy document is empty".into())]
        );
        let bad_json = errors(r#"{"Statement": [}"#, id);
        assert_eq!(bad_json.len(), 1);
        assert_eq!(bad_json[0].0, "");
        assert!(
            bad_json[0].1.starts_with("not valid JSON: "),
            "{bad_json:?}"
        );
        assert!(bad_json[0].1.contains("line 1"), "{bad_json:?}");
        let bad_yaml = errors("Statement: [unclosed", id);
        assert!(
            bad_yaml[0].1.starts_with("not valid JSON or YAML: "),
            "{bad_yaml:?}"
        );
        // Duplicate Sids.
        let dup = r#"{"Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "B", "Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "A", "Effect": "Deny", "Action": "*", "Resource": "*"}
        ]}"#;
        assert_eq!(
            errors(dup, id),
            vec![(
                "Statement[2].Sid".into(),
                r#"duplicate Sid "A" (also Statement[0])"#.into()
            )]
        );
        // Duplicate top-level elements.
        assert_eq!(
            error_paths(
                r#"{"Version": "2012-10-17", "Version": "2008-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
                id
            ),
            vec!["Version"]
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = r#"{
            "Version": "2012-10-17",
            "Extra": true,
            "Statement": [
                {"Effect": "Permit", "Action": "ecr", "Resource": "repo"},
                {"Effect": "Allow", "Principal": "*", "NotAction": "*", "Resource": "*",
                 "Condition": {"StringEqualz": {"k": "v"}, "Bool": {"b": "maybe"}}}
            ]
        }"#;
        let paths = error_paths(text, PolicyKind::Identity);
        assert_eq!(
            paths,
            vec![
                "Extra",
                "Statement[0].Effect",
                "Statement[0].Action",
                "Statement[0].Resource",
                "Statement[1]",
                "Statement[1].Condition.StringEqualz",
                "Statement[1].Condition.Bool.b",
            ]
        );
        let err = Policy::parse(text, PolicyKind::Identity).unwrap_err();
        assert_eq!(err.0.len(), 7);
        let shown = err.to_string();
        assert!(
            shown.starts_with("invalid policy document: Extra: unknown element"),
            "{shown}"
        );
        assert!(
            shown.contains("; Statement[0].Effect: \"Permit\" is not Allow or Deny"),
            "{shown}"
        );
    }

    #[test]
    fn size_limits_are_ecrs_and_iams() {
        let pad = |n: usize| {
            let base = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}]}"#;
            let mut s = base.to_string();
            s.push_str(&" ".repeat(n - base.len()));
            s
        };
        assert!(validate(&pad(MAX_REPOSITORY_POLICY_CHARS), PolicyKind::Repository).is_empty());
        assert_eq!(
            errors(
                &pad(MAX_REPOSITORY_POLICY_CHARS + 1),
                PolicyKind::Repository
            ),
            vec![(
                "".into(),
                "the repository policy is 10241 characters; at most 10240 are allowed".into()
            )]
        );
        assert!(
            errors(&pad(MAX_REGISTRY_POLICY_CHARS + 1), PolicyKind::Registry).contains(&(
                "".into(),
                "the registry policy is 10241 characters; at most 10240 are allowed".into()
            ))
        );
        // Characters, not bytes.
        let wide = format!(
            r#"{{"Id": "{}", "Statement": [{{"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}}]}}"#,
            "é".repeat(5100)
        );
        assert!(wide.len() > MAX_REPOSITORY_POLICY_CHARS);
        assert!(validate(&wide, PolicyKind::Repository).is_empty());
        // IAM does not count whitespace.
        let spaced = identity_statement(&format!(
            r#""Effect": "Allow", "Action": "*", "Resource": "*"{}"#,
            " ".repeat(10_000)
        ));
        assert!(validate(&spaced, PolicyKind::Identity).is_empty());
        let long = identity_statement(&format!(
            r#""Sid": "{}", "Effect": "Allow", "Action": "*", "Resource": "*""#,
            "a".repeat(MAX_IDENTITY_POLICY_CHARS)
        ));
        let e = errors(&long, PolicyKind::Identity);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].1
                .contains("characters not counting whitespace; at most 6144"),
            "{e:?}"
        );
        // Far too large: the size alone is reported.
        let huge = format!(
            r#"{{"Statement": [{}]}}"#,
            r#"{"Efect": 1},"#.repeat(20_000)
        );
        let e = errors(&huge, PolicyKind::Repository);
        assert_eq!(e.len(), 1);
        assert!(e[0].1.starts_with("the repository policy is "), "{e:?}");
    }

    // ---- YAML --------------------------------------------------------------------------

    #[test]
    fn yaml_is_the_same_document() {
        let yaml = r#"
Version: 2012-10-17
Statement:
  - Sid: AllowPushPull
    Effect: Allow
    Principal:
      AWS:
        - arn:aws:iam::123456789012:user/alice
        - arn:aws:iam::444455556666:user/carol
    Action:
      - ecr:BatchGetImage
      - ecr:BatchCheckLayerAvailability
      - ecr:CompleteLayerUpload
      - ecr:GetDownloadUrlForLayer
      - ecr:InitiateLayerUpload
      - ecr:PutImage
      - ecr:UploadLayerPart
"#;
        let from_yaml = repository(yaml);
        let from_json = repository(ALLOW_USERS_PUSH_PULL);
        assert_eq!(from_yaml.statements(), from_json.statements());
        assert_eq!(from_yaml.version(), Some(Version::V2012_10_17));
        assert_eq!(from_yaml.text(), yaml);
        assert_eq!(
            decide(
                &alice(),
                "ecr:PutImage",
                &arn("team/app"),
                &[],
                Some(&from_yaml)
            ),
            Allow
        );

        let conditions = r#"
Version: "2012-10-17"
Statement:
  Effect: Deny
  Action: "*"
  Resource: "*"
  Condition:
    Bool:
      aws:SecureTransport: false
    NumericGreaterThan:
      aws:MultiFactorAuthAge: 3600
"#;
        let p = identity(conditions);
        assert_eq!(p.statements()[0].conditions[0].values, vec!["false"]);
        assert_eq!(p.statements()[0].conditions[1].values, vec!["3600"]);

        // Errors in YAML have the same paths.
        let bad = "Statement:\n  - Effect: Allow\n    Efect: Deny\n    Action: ecr:*\n    Resource: '*'\n";
        assert_eq!(
            error_paths(bad, PolicyKind::Identity),
            vec!["Statement[0].Efect"]
        );
        // An account id written as a YAML number is not taken as a string.
        let number =
            "Statement:\n  Effect: Allow\n  Principal:\n    AWS: 123456789012\n  Action: ecr:*\n";
        assert_eq!(
            error_paths(number, PolicyKind::Repository),
            vec!["Statement.Principal.AWS"]
        );
    }

    // ---- Warnings, actions, principals -------------------------------------------------

    #[test]
    fn warnings_for_actions_that_match_nothing() {
        let p = identity(&identity_statement(
            r#""Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:PullImage", "s3:GetObject", "ecr:Batch*", "ECR:putimage"], "Resource": "*""#,
        ));
        let w = p.warnings();
        let paths: Vec<&str> = w.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["Statement[0].Action[1]", "Statement[0].Action[2]"]
        );
        assert_eq!(
            w[0].message,
            r#""ecr:PullImage" matches no action ecrl knows, so it has no effect here"#
        );
        let single = identity(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny", "NotAction": "ecs:Nope*", "Resource": "*"}}"#,
        );
        assert_eq!(single.warnings()[0].path, "Statement.NotAction");
        let allow_not = repository(
            r#"{"Statement": {"Effect": "Allow", "NotPrincipal": {"AWS": "123456789012"}, "Action": "ecr:*"}}"#,
        );
        let w = allow_not.warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].path, "Statement.NotPrincipal");
        assert!(repository(DENY_DELETE).warnings().is_empty());
    }

    #[test]
    fn known_actions() {
        for a in [
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability",
            "ecr:PutImage",
            "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload",
            "ecr:CreateRepository",
            "ecr:DeleteRepository",
            "ecr:DescribeRepositories",
            "ecr:DescribeImages",
            "ecr:ListImages",
            "ecr:BatchDeleteImage",
            "ecr:SetRepositoryPolicy",
            "ecs:RegisterTaskDefinition",
            "ecs:RunTask",
            "ecs:StopTask",
            "ecr:GetAuthorizationToken",
            "ecr:ListTagsForResource",
            "ecr:TagResource",
            "ecr:UntagResource",
            "ecr:GetRepositoryPolicy",
            "ecr:DeleteRepositoryPolicy",
            "ecr:PutImageTagMutability",
            "ecr:GetRegistryPolicy",
            "ecr:PutRegistryPolicy",
            "ecr:DeleteRegistryPolicy",
            "ecs:DescribeTaskDefinition",
            "ecs:ListTaskDefinitions",
            "ecs:ListTaskDefinitionFamilies",
            "ecs:DeregisterTaskDefinition",
            "ecs:DeleteTaskDefinitions",
            "ecs:DescribeTasks",
            "ecs:ListTasks",
            "iam:CreateUser",
            "iam:DeleteUser",
            "iam:ListUsers",
            "iam:AttachUserPolicy",
            "iam:DetachUserPolicy",
            "iam:CreateAccessKey",
        ] {
            assert!(is_known_action(a), "{a}");
        }
        assert!(is_known_action("ECR:batchgetimage"));
        assert_eq!(known_action("ecr:PutImage"), Ok(()));
        assert_eq!(
            known_action("PutImage"),
            Err(
                "\"PutImage\" is not an action ecrl knows: actions carry their service \
                 prefix, as in ecr:PutImage"
                    .into()
            )
        );
        assert!(known_action("ecr:PutImag")
            .unwrap_err()
            .contains("ecr:PutImage?"));
        assert!(known_action("ecr:Put*").is_err());
        assert!(!is_known_action("ecr:*"));
        assert!(!is_known_action("ecr:PullImage"));
        let mut seen = std::collections::HashSet::new();
        for a in ACTIONS {
            assert!(seen.insert(a.to_ascii_lowercase()), "{a} twice");
            assert!(check_action(a).is_ok(), "{a}");
        }
    }

    #[test]
    fn principals_parse() {
        assert_eq!(
            Principal::parse("anonymous", None),
            Ok(Principal::Anonymous)
        );
        assert_eq!(
            Principal::parse(ACCT, None),
            Ok(Principal::Account(ACCT.into()))
        );
        assert_eq!(
            Principal::parse("arn:aws:iam::123456789012:root", None),
            Ok(Principal::Account(ACCT.into()))
        );
        assert_eq!(
            Principal::parse("arn:aws:iam::123456789012:user/alice", None),
            Ok(alice())
        );
        assert_eq!(Principal::parse("alice", Some(ACCT)), Ok(alice()));
        for bad in [
            "alice",
            "arn:aws:iam::123:user/alice",
            "arn:aws:iam::123456789012:role/r",
            "arn:aws:iam::123456789012:user/a/b",
            "arn:aws:iam::123456789012:user/",
            "12345678901",
        ] {
            assert!(Principal::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Principal::parse("has space", Some(ACCT)).is_err());
        assert_eq!(alice().to_string(), "arn:aws:iam::123456789012:user/alice");
        assert_eq!(
            Principal::Account(ACCT.into()).to_string(),
            "arn:aws:iam::123456789012:root"
        );
        assert_eq!(Principal::Anonymous.to_string(), "anonymous");
        assert_eq!(Principal::Anonymous.account(), None);
        assert_eq!(alice().account(), Some(ACCT));
    }

    #[test]
    fn resource_policy_statements_without_principal_cover_no_one() {
        // An identity policy passed as a resource policy grants nothing.
        let admin = identity(ADMIN);
        let request = Request {
            principal: &alice(),
            action: "ecr:PutImage",
            resource: &arn("team/app"),
            context: &no_context(),
        };
        let d = evaluate(&request, &[], &[(PolicySource::Registry, &admin)]);
        assert_eq!(d.effect, ImplicitDeny);
    }

    #[test]
    fn operator_names_round_trip() {
        for (name, base) in BASE_OPERATORS {
            assert_eq!(base.name(), *name);
            let op = parse_operator(name).unwrap();
            assert_eq!(op.to_string(), *name);
            if *base != BaseOperator::Null {
                for full in [
                    format!("{name}IfExists"),
                    format!("ForAnyValue:{name}"),
                    format!("ForAllValues:{name}IfExists"),
                ] {
                    assert_eq!(parse_operator(&full).unwrap().to_string(), full);
                }
            }
        }
    }

    #[test]
    fn resources_from_another_account_region_or_service_are_named() {
        let policy = identity(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Sid": "Pull", "Effect": "Allow", "Action": "ecr:BatchGetImage",
                 "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/app"},
                {"Effect": "Allow", "Action": "ecr:*", "Resource": [
                    "arn:aws:ecr:local:999999999999:repository/*",
                    "arn:aws:ecr:*:*:repository/team/*",
                    "arn:aws-cn:ecr:local:111122223333:repository/x",
                    "arn:aws:s3:::bucket/*",
                    "arn:aws:ecr:eu-*",
                    "arn:aws:ecr:*",
                    "arn:aws:ecr:local:111122223333:registry",
                    "arn:aws:ecr:local:111122223333:repo/x",
                    "arn:aws:ecr:local:${aws:PrincipalAccount}:repository/x",
                    "*"]},
                {"Effect": "Deny", "Action": "ecr:*",
                 "NotResource": "arn:aws:ecr:us-east-1:123456789012:repository/app"}
            ]}"#,
        );
        let found = policy.foreign_resources("local", "111122223333");
        let paths: Vec<&str> = found.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Statement[0].Resource",
                "Statement[1].Resource[0]",
                "Statement[1].Resource[2]",
                "Statement[1].Resource[3]",
                "Statement[1].Resource[4]",
                "Statement[1].Resource[7]",
            ],
            "{found:#?}"
        );
        let first = found[0].to_string();
        for needle in [
            "statement \"Pull\"",
            "its region is \"us-east-1\", not \"local\"",
            "arn:aws:ecr:local:111122223333:repository/NAME",
            "account_id",
        ] {
            assert!(first.contains(needle), "{needle:?} in {first}");
        }
        assert!(
            found[1].message.starts_with("statement 1: "),
            "{}",
            found[1]
        );
        assert!(found[1].message.contains("its account is \"999999999999\""));
        assert!(found[2].message.contains("its partition is \"aws-cn\""));
        assert!(found[3].message.contains("its service is \"s3\""));
        assert!(found[5]
            .message
            .contains("neither repository/NAME nor registry"));

        // With the policy's own region and account set, it matches.
        let configured = policy.foreign_resources("us-east-1", "123456789012");
        assert_eq!(configured.len(), 6, "{configured:#?}");
        assert!(configured
            .iter()
            .all(|e| !e.path.starts_with("Statement[0]")));

        // A repository policy that leaves Resource out means the repository itself.
        let own = repository(
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}]}"#,
        );
        assert!(own.foreign_resources("local", "111122223333").is_empty());
    }
}

/// Policy text arrives over the control API: hostile nesting (within the size the parser
/// still reads, 8 times the limit) must be refused quickly, not keep the daemon busy.
#[cfg(test)]
mod hostile_input {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_quickly() {
        for open in ["[", "{a: ", "{\"a\":"] {
            let text = open.repeat(MAX_REPOSITORY_POLICY_CHARS * 8 / open.len());
            let started = std::time::Instant::now();
            let errors = validate(&text, PolicyKind::Repository);
            assert!(errors.iter().any(|e| e.message.contains("not valid JSON")));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{:?} for {open}",
                started.elapsed()
            );
        }
    }
}
