//! Lifecycle policies: ECR's document (rules that expire images by their tags, their number
//! and their age), how it is read and checked, and which images a policy expires.
//!
//! The grammar and the evaluation are ECR's ("Lifecycle policy evaluation rules"):
//! - every rule selects its images (`tagStatus`, and for tagged rules a prefix or pattern
//!   list: each entry must match one of the image's tags) and marks some of them
//!   (`imageCountMoreThan` keeps the newest N by push time; `sinceImagePushed` marks those
//!   pushed more than N days ago);
//! - rules apply by `rulePriority`, lowest first; an image is expired by at most one rule, and
//!   an image a rule *selected* can no longer be expired by a rule of lower priority, even if
//!   that rule did not mark it (lower rules still count it when they keep the newest N).
//!
//! ecrl has no archive storage class: `transition`, `storageClass: archive` and
//! `sinceImageTransitioned` are refused with a clear error. `sinceImagePulled` (on ECR only a
//! way to archive) expires images not pulled for N days, by ecrl's recorded last pull (the
//! push time for an image never pulled). Beyond ECR, an image the caller marks as in use (a
//! running task's, one an ACTIVE task definition names by digest) is never expired: it is
//! reported as kept, with the reason.

use crate::names::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// ECR's limits: rules per policy, characters per policy text, `*` per pattern.
pub const MAX_RULES: usize = 50;
pub const MAX_TEXT: usize = 30_720;
pub const MAX_WILDCARDS: usize = 4;

/// A day in milliseconds (times here are unix milliseconds, as ecrl records them).
const DAY: i64 = 24 * 3600 * 1000;

/// A lifecycle policy (ECR's `lifecyclePolicyText`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecyclePolicy {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub rule_priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub selection: Selection,
    pub action: Action,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selection {
    pub tag_status: TagStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_prefix_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_pattern_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    pub count_type: CountType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_unit: Option<CountUnit>,
    pub count_number: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CountType {
    ImageCountMoreThan,
    SinceImagePushed,
    SinceImagePulled,
    SinceImageTransitioned,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CountUnit {
    Days,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageClass {
    Standard,
    Archive,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_storage_class: Option<StorageClass>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Expire,
    Transition,
}

/// A document refused, each problem with the path of what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lifecycle policy: {}", .0.join("; "))]
pub struct InvalidLifecyclePolicy(pub Vec<String>);

/// ECR's request shape carries the policy as text in `lifecyclePolicyText`; both that and the
/// bare policy are read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wrapped {
    lifecycle_policy_text: String,
}

impl LifecyclePolicy {
    /// Reads a policy from JSON or YAML and checks it as ECR does.
    pub fn parse(text: &str) -> Result<Self, InvalidLifecyclePolicy> {
        let one = |path: &str, message: String| InvalidLifecyclePolicy(vec![at(path, &message)]);
        if text.len() > MAX_TEXT {
            return Err(one(
                "",
                format!(
                    "at most {MAX_TEXT} characters, not {} (ECR's limit)",
                    text.len()
                ),
            ));
        }
        let value = crate::nesting::json_or_yaml(text).map_err(|e| one("", e))?;
        let value = match serde_json::from_value::<Wrapped>(value.clone()) {
            Ok(w) => return Self::parse(&w.lifecycle_policy_text),
            Err(_) => value,
        };
        if let Some(path) = null_at(&value, String::new()) {
            return Err(one(
                &path,
                "null is not a value here: leave the field out instead".into(),
            ));
        }
        let policy: LifecyclePolicy = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            one(&path, e.inner().to_string())
        })?;
        let errors = policy.problems();
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(InvalidLifecyclePolicy(errors))
        }
    }

    /// ECR's checks, each problem with its path.
    fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.rules.is_empty() {
            errors.push(at("rules", "a policy needs at least one rule"));
        }
        if self.rules.len() > MAX_RULES {
            errors.push(at(
                "rules",
                &format!("at most {MAX_RULES} rules, not {}", self.rules.len()),
            ));
        }
        let mut priorities: HashMap<i64, usize> = HashMap::new();
        let mut lists: HashMap<(bool, BTreeSet<&str>), usize> = HashMap::new();
        let mut untagged: Option<usize> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            let s = &rule.selection;
            if rule.rule_priority < 1 {
                errors.push(at(
                    &format!("{path}.rulePriority"),
                    &format!("must be 1 or more, not {}", rule.rule_priority),
                ));
            } else if let Some(first) = priorities.insert(rule.rule_priority, i) {
                errors.push(at(
                    &format!("{path}.rulePriority"),
                    &format!(
                        "{} is also the priority of rules[{first}]: every rule needs its own",
                        rule.rule_priority
                    ),
                ));
            }
            let sel = format!("{path}.selection");
            match (s.tag_status, &s.tag_prefix_list, &s.tag_pattern_list) {
                (TagStatus::Tagged, None, None) => errors.push(at(
                    &sel,
                    "a tagged rule needs a tagPrefixList or a tagPatternList",
                )),
                (TagStatus::Tagged, Some(_), Some(_)) => errors.push(at(
                    &sel,
                    "a rule takes a tagPrefixList or a tagPatternList, not both",
                )),
                (TagStatus::Tagged, prefixes, patterns) => {
                    let (name, list, patterned) = match (prefixes, patterns) {
                        (Some(l), _) => ("tagPrefixList", l, false),
                        (_, Some(l)) => ("tagPatternList", l, true),
                        _ => unreachable!("matched above"),
                    };
                    if list.is_empty() {
                        errors.push(at(&format!("{sel}.{name}"), "must not be empty"));
                    }
                    for (j, entry) in list.iter().enumerate() {
                        let path = format!("{sel}.{name}[{j}]");
                        if entry.is_empty() {
                            errors.push(at(&path, "must not be empty"));
                        } else if !patterned && entry.contains('*') {
                            errors.push(at(
                                &path,
                                "a prefix is plain text: for wildcards use tagPatternList",
                            ));
                        } else if entry.matches('*').count() > MAX_WILDCARDS {
                            errors.push(at(
                                &path,
                                &format!("at most {MAX_WILDCARDS} wildcards (*) per pattern"),
                            ));
                        }
                    }
                    let set = list.iter().map(String::as_str).collect();
                    if let Some(first) = lists.insert((patterned, set), i) {
                        errors.push(at(
                            &format!("{sel}.{name}"),
                            &format!("rules[{first}] selects the same tags: each rule needs a set of its own"),
                        ));
                    }
                }
                (status, prefixes, patterns) => {
                    if prefixes.is_some() || patterns.is_some() {
                        errors.push(at(
                            &sel,
                            &format!(
                                "tagPrefixList and tagPatternList are for tagged rules, not {}",
                                status.as_str()
                            ),
                        ));
                    }
                    if status == TagStatus::Untagged {
                        if let Some(first) = untagged.replace(i) {
                            errors.push(at(
                                &format!("{sel}.tagStatus"),
                                &format!("rules[{first}] already selects untagged images: only one rule may"),
                            ));
                        }
                    }
                }
            }
            match (s.count_type, s.count_unit) {
                (CountType::ImageCountMoreThan, Some(_)) => errors.push(at(
                    &format!("{sel}.countUnit"),
                    "only for sinceImagePushed and sinceImagePulled: imageCountMoreThan counts images",
                )),
                (CountType::SinceImagePushed | CountType::SinceImagePulled, None) => errors.push(
                    at(&format!("{sel}.countUnit"), "required (\"days\") with this countType"),
                ),
                _ => {}
            }
            if s.count_number < 1 {
                errors.push(at(
                    &format!("{sel}.countNumber"),
                    &format!("must be 1 or more, not {}", s.count_number),
                ));
            }
            let no_archive = "ecrl has no archive storage class: rules here expire images";
            if s.count_type == CountType::SinceImageTransitioned {
                errors.push(at(&format!("{sel}.countType"), no_archive));
            }
            if s.storage_class == Some(StorageClass::Archive) {
                errors.push(at(&format!("{sel}.storageClass"), no_archive));
            }
            if rule.action.kind == ActionType::Transition
                || rule.action.target_storage_class.is_some()
            {
                errors.push(at(
                    &format!("{path}.action"),
                    &format!("{no_archive} (\"type\": \"expire\")"),
                ));
            }
        }
        // An `any` rule is the last: the highest priority, and the only one.
        let highest = self.rules.iter().map(|r| r.rule_priority).max();
        let mut any_seen = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.selection.tag_status != TagStatus::Any {
                continue;
            }
            let path = format!("rules[{i}].selection.tagStatus");
            if any_seen {
                errors.push(at(&path, "only one rule may select any images"));
            } else if Some(rule.rule_priority) != highest
                || self
                    .rules
                    .iter()
                    .filter(|r| r.rule_priority == rule.rule_priority)
                    .count()
                    > 1
            {
                errors.push(at(
                    &path,
                    "a rule selecting any images must have the highest rulePriority (it is evaluated last)",
                ));
            }
            any_seen = true;
        }
        errors
    }
}

impl TagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TagStatus::Tagged => "tagged",
            TagStatus::Untagged => "untagged",
            TagStatus::Any => "any",
        }
    }
}

/// What a policy is evaluated on: one image of the repository (an index counts as one image;
/// its children and the artifacts that refer to an image are not images of their own here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub digest: Digest,
    pub tags: Vec<String>,
    /// Unix milliseconds.
    pub pushed_at: i64,
    /// Unix milliseconds of the last recorded pull, if any.
    pub last_pulled_at: Option<i64>,
    /// Why it may not be expired whatever the rules say (a task uses it), if so.
    pub in_use: Option<String>,
}

/// What the policy does with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Expired by the rule of this priority.
    Expire { rule_priority: i64 },
    /// The rule of this priority would expire it, but it is in use (the reason).
    Kept { rule_priority: i64, reason: String },
}

/// Which images `policy` expires among `images` at `now` (unix milliseconds), and which it would
/// expire but keeps because they are in use: by digest, for the images a rule marked.
pub fn evaluate(policy: &LifecyclePolicy, images: &[Image], now: i64) -> HashMap<Digest, Verdict> {
    let mut rules: Vec<&Rule> = policy.rules.iter().collect();
    rules.sort_by_key(|r| r.rule_priority);
    let mut claimed: HashSet<Digest> = HashSet::new();
    let mut verdicts = HashMap::new();
    for rule in rules {
        let selected: Vec<&Image> = images.iter().filter(|i| selects(rule, i)).collect();
        for image in marks(rule, &selected, now) {
            if claimed.contains(&image.digest) {
                continue;
            }
            let verdict = match &image.in_use {
                Some(reason) => Verdict::Kept {
                    rule_priority: rule.rule_priority,
                    reason: reason.clone(),
                },
                None => Verdict::Expire {
                    rule_priority: rule.rule_priority,
                },
            };
            verdicts.insert(image.digest, verdict);
        }
        claimed.extend(selected.iter().map(|i| i.digest));
    }
    verdicts
}

/// Whether the rule's selection takes the image (ignoring counts).
fn selects(rule: &Rule, image: &Image) -> bool {
    let s = &rule.selection;
    match s.tag_status {
        TagStatus::Any => true,
        TagStatus::Untagged => image.tags.is_empty(),
        TagStatus::Tagged => {
            // Every entry must match one of the image's tags (other tags do not matter).
            if let Some(prefixes) = &s.tag_prefix_list {
                prefixes
                    .iter()
                    .all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
            } else if let Some(patterns) = &s.tag_pattern_list {
                patterns.iter().all(|p| {
                    image
                        .tags
                        .iter()
                        .any(|t| crate::names::wildcard_match(p, t))
                })
            } else {
                false
            }
        }
    }
}

/// The selected images the rule's count marks.
fn marks<'a>(rule: &Rule, selected: &[&'a Image], now: i64) -> Vec<&'a Image> {
    let s = &rule.selection;
    let days = s.count_number.saturating_mul(DAY);
    match s.count_type {
        CountType::ImageCountMoreThan => {
            // Newest first by push time; equal push times by digest, so that runs agree.
            let mut sorted = selected.to_vec();
            sorted.sort_by(|a, b| {
                b.pushed_at
                    .cmp(&a.pushed_at)
                    .then_with(|| a.digest.to_string().cmp(&b.digest.to_string()))
            });
            let keep = usize::try_from(s.count_number).unwrap_or(usize::MAX);
            sorted.into_iter().skip(keep).collect()
        }
        CountType::SinceImagePushed => selected
            .iter()
            .copied()
            .filter(|i| now.saturating_sub(i.pushed_at) > days)
            .collect(),
        CountType::SinceImagePulled => selected
            .iter()
            .copied()
            .filter(|i| now.saturating_sub(i.last_pulled_at.unwrap_or(i.pushed_at)) > days)
            .collect(),
        // Refused when the policy is read.
        CountType::SinceImageTransitioned => Vec::new(),
    }
}

/// The path of the first `null` in a document, if any.
fn null_at(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::Null => Some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| null_at(v, format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            null_at(v, path)
        }),
        _ => None,
    }
}

fn at(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3600 * 1000;

    fn image(n: u8, tags: &[&str], age: i64) -> Image {
        Image {
            digest: Digest::from_bytes([n; 32]),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: NOW - age,
            last_pulled_at: None,
            in_use: None,
        }
    }

    fn expired(policy: &str, images: &[Image]) -> Vec<(u8, i64)> {
        let policy = LifecyclePolicy::parse(policy).unwrap();
        let verdicts = evaluate(&policy, images, NOW);
        let mut out: Vec<(u8, i64)> = images
            .iter()
            .filter_map(|i| match verdicts.get(&i.digest) {
                Some(Verdict::Expire { rule_priority }) => {
                    Some((i.digest.bytes()[0], *rule_priority))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn rule(priority: i64, selection: &str) -> String {
        format!(
            r#"{{"rulePriority": {priority}, "selection": {selection}, "action": {{"type": "expire"}}}}"#
        )
    }

    fn policy(rules: &[String]) -> String {
        format!(r#"{{"rules": [{}]}}"#, rules.join(","))
    }

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;
    const D: u8 = 4;
    const E: u8 = 5;
    const F: u8 = 6;

    // ECR's "Examples of lifecycle policies", each with its documented outcome.

    #[test]
    fn ecr_example_multiple_rules_a_prod_first() {
        let images = [
            image(A, &["beta-1", "prod-1"], 10 * DAY),
            image(B, &["beta-2", "prod-2"], 9 * DAY),
            image(C, &["beta-3"], 8 * DAY),
        ];
        let p = policy(&[
            rule(
                1,
                r#"{"tagStatus": "tagged", "tagPatternList": ["prod*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
            ),
            rule(
                2,
                r#"{"tagStatus": "tagged", "tagPatternList": ["beta*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
            ),
        ]);
        // B is kept by rule 1 and so cannot be expired by rule 2; C is rule 2's newest.
        assert_eq!(expired(&p, &images), [(A, 1)]);
        // The same with prefixes (ECR's older form of the example).
        let p = p
            .replace("tagPatternList", "tagPrefixList")
            .replace('*', "");
        assert_eq!(expired(&p, &images), [(A, 1)]);
    }

    #[test]
    fn ecr_example_multiple_rules_b_beta_first() {
        let images = [
            image(A, &["beta-1", "prod-1"], 10 * DAY),
            image(B, &["beta-2", "prod-2"], 9 * DAY),
            image(C, &["beta-3"], 8 * DAY),
        ];
        let p = policy(&[
            rule(
                1,
                r#"{"tagStatus": "tagged", "tagPatternList": ["beta*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
            ),
            rule(
                2,
                r#"{"tagStatus": "tagged", "tagPatternList": ["prod*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
            ),
        ]);
        assert_eq!(expired(&p, &images), [(A, 1), (B, 1)]);
    }

    #[test]
    fn ecr_example_multiple_tags_all_entries_must_match() {
        let images = [
            image(A, &["alpha-1"], 12 * DAY),
            image(B, &["beta-1"], 11 * DAY),
            image(C, &["alpha-2", "beta-2"], 10 * DAY),
            image(D, &["alpha-3"], 4 * DAY),
            image(E, &["beta-3"], 3 * DAY),
            image(F, &["alpha-4", "beta-4"], 2 * DAY),
        ];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "tagged", "tagPatternList": ["alpha*", "beta*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 5}"#,
        )]);
        assert_eq!(expired(&p, &images), [(C, 1)]);
    }

    #[test]
    fn ecr_example_tags_are_not_exclusive() {
        let images = [
            image(A, &["alpha-1", "beta-1", "gamma-1"], 10 * DAY),
            image(B, &["alpha-2", "beta-2"], 9 * DAY),
            image(C, &["alpha-3", "beta-3", "gamma-2"], 8 * DAY),
        ];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "tagged", "tagPatternList": ["alpha*", "beta*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
        )]);
        assert_eq!(expired(&p, &images), [(A, 1), (B, 1)]);
    }

    #[test]
    fn ecr_example_all_images_any() {
        let images = [
            image(A, &["alpha-1"], 4 * DAY),
            image(B, &["beta-1"], 3 * DAY),
            image(C, &[], 2 * DAY),
            image(D, &["alpha-2"], DAY),
        ];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}"#,
        )]);
        assert_eq!(expired(&p, &images), [(A, 1), (B, 1), (C, 1)]);
    }

    #[test]
    fn ecr_example_all_images_three_rules() {
        // ECR's example gives D and E both "1 day ago"; its outcome needs E the newer one,
        // pushed less than a day ago.
        let images = [
            image(A, &["alpha-1", "beta-1"], 4 * DAY),
            image(B, &[], 3 * DAY),
            image(C, &["alpha-2"], 2 * DAY),
            image(D, &["git hash"], DAY),
            image(E, &[], DAY - HOUR),
        ];
        let p = policy(&[
            rule(
                1,
                r#"{"tagStatus": "tagged", "tagPatternList": ["alpha*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
            ),
            rule(
                2,
                r#"{"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}"#,
            ),
            rule(
                3,
                r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}"#,
            ),
        ]);
        assert_eq!(expired(&p, &images), [(A, 1), (B, 2), (D, 3)]);
    }

    // The edge cases.

    #[test]
    fn equal_push_times_are_broken_by_digest_the_same_way_every_run() {
        let images = [
            image(C, &["v3"], DAY),
            image(A, &["v1"], DAY),
            image(B, &["v2"], DAY),
        ];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
        )]);
        assert_eq!(expired(&p, &images), [(B, 1), (C, 1)]);
        let reversed: Vec<Image> = images.iter().rev().cloned().collect();
        assert_eq!(expired(&p, &reversed), [(B, 1), (C, 1)]);
    }

    #[test]
    fn one_matching_tag_of_several_selects_the_image() {
        let images = [
            image(A, &["latest", "release-1"], 3 * DAY),
            image(B, &["release-2"], 2 * DAY),
            image(C, &["dev"], DAY),
        ];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "tagged", "tagPatternList": ["release-*"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
        )]);
        assert_eq!(expired(&p, &images), [(A, 1)]);
    }

    #[test]
    fn tagged_rules_never_take_untagged_images_and_untagged_rules_no_tagged_ones() {
        let images = [image(A, &[], 30 * DAY), image(B, &["v1"], 30 * DAY)];
        let tagged = policy(&[rule(
            1,
            r#"{"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}"#,
        )]);
        assert_eq!(expired(&tagged, &images), [(B, 1)]);
        let untagged = policy(&[rule(
            1,
            r#"{"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}"#,
        )]);
        assert_eq!(expired(&untagged, &images), [(A, 1)]);
    }

    #[test]
    fn age_counts_whole_days_strictly() {
        let images = [image(A, &[], 7 * DAY), image(B, &[], 7 * DAY + 1000)];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}"#,
        )]);
        assert_eq!(expired(&p, &images), [(B, 1)]);
    }

    #[test]
    fn since_image_pulled_uses_the_last_pull_or_else_the_push() {
        let mut pulled = image(A, &["a"], 90 * DAY);
        pulled.last_pulled_at = Some(NOW - 2 * DAY);
        let mut stale = image(B, &["b"], 90 * DAY);
        stale.last_pulled_at = Some(NOW - 40 * DAY);
        let never = image(C, &["c"], 90 * DAY);
        let fresh = image(D, &["d"], 10 * DAY);
        let p = policy(&[rule(
            1,
            r#"{"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30}"#,
        )]);
        assert_eq!(
            expired(&p, &[pulled, stale, never, fresh]),
            [(B, 1), (C, 1)]
        );
    }

    #[test]
    fn an_image_in_use_is_kept_and_still_counts() {
        let mut used = image(A, &["v1"], 3 * DAY);
        used.in_use = Some("task 1234 runs it".into());
        let images = [used, image(B, &["v2"], 2 * DAY), image(C, &["v3"], DAY)];
        let p = LifecyclePolicy::parse(&policy(&[rule(
            1,
            r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}"#,
        )]))
        .unwrap();
        let verdicts = evaluate(&p, &images, NOW);
        assert_eq!(
            verdicts[&images[0].digest],
            Verdict::Kept {
                rule_priority: 1,
                reason: "task 1234 runs it".into()
            }
        );
        assert_eq!(
            verdicts[&images[1].digest],
            Verdict::Expire { rule_priority: 1 }
        );
        assert!(!verdicts.contains_key(&images[2].digest));
    }

    #[test]
    fn wildcards_match_the_whole_tag() {
        use crate::names::wildcard_match;
        for (pattern, tag, matches) in [
            ("prod*", "prod", true),
            ("prod*", "production-team1", true),
            ("prod*", "xprod", false),
            ("*prod*", "repo-production", true),
            ("*prod*", "prod-team", true),
            ("*prod", "prod-team", false),
            ("prod", "prod", true),
            ("prod", "prod1", false),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("*test*1*2*3", "xtest-1-2-3", true),
        ] {
            assert_eq!(wildcard_match(pattern, tag), matches, "{pattern} {tag}");
        }
    }

    // ECR's validation, each problem with its path.

    fn problems(text: &str) -> Vec<String> {
        LifecyclePolicy::parse(text).unwrap_err().0
    }

    #[test]
    fn bad_policies_are_refused_with_the_path_of_each_problem() {
        let tagged_1 = r#"{"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}"#;
        let untagged =
            r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}"#;
        let any = r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}"#;
        let cases: Vec<(String, &str)> = vec![
            (r#"{"rules": []}"#.into(), "rules: a policy needs at least one rule"),
            (policy(&[rule(0, untagged)]), "rules[0].rulePriority: must be 1 or more"),
            (
                policy(&[rule(1, tagged_1), rule(1, untagged)]),
                "rules[1].rulePriority: 1 is also the priority of rules[0]",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}"#)]),
                "rules[0].selection: a tagged rule needs a tagPrefixList or a tagPatternList",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["b*"], "countType": "imageCountMoreThan", "countNumber": 1}"#)]),
                "rules[0].selection: a rule takes a tagPrefixList or a tagPatternList, not both",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "untagged", "tagPrefixList": ["a"], "countType": "imageCountMoreThan", "countNumber": 1}"#)]),
                "rules[0].selection: tagPrefixList and tagPatternList are for tagged rules, not untagged",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "tagged", "tagPatternList": ["a*b*c*d*e*f"], "countType": "imageCountMoreThan", "countNumber": 1}"#)]),
                "rules[0].selection.tagPatternList[0]: at most 4 wildcards",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "tagged", "tagPrefixList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 1}"#)]),
                "rules[0].selection.tagPrefixList[0]: a prefix is plain text",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1}"#)]),
                "rules[0].selection.countUnit: only for sinceImagePushed",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1}"#)]),
                "rules[0].selection.countUnit: required",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 0}"#)]),
                "rules[0].selection.countNumber: must be 1 or more, not 0",
            ),
            (
                policy(&[rule(1, untagged), rule(2, untagged)]),
                "rules[1].selection.tagStatus: rules[0] already selects untagged images",
            ),
            (
                policy(&[rule(1, any), rule(2, tagged_1)]),
                "rules[0].selection.tagStatus: a rule selecting any images must have the highest rulePriority",
            ),
            (
                policy(&[rule(1, tagged_1), rule(2, tagged_1)]),
                "rules[1].selection.tagPrefixList: rules[0] selects the same tags",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "any", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90}"#)]),
                "rules[0].selection.countType: ecrl has no archive storage class",
            ),
            (
                policy(&[r#"{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "transition", "targetStorageClass": "archive"}}"#.into()]),
                "rules[0].action: ecrl has no archive storage class",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "sometimes", "countType": "imageCountMoreThan", "countNumber": 1}"#)]),
                "rules[0].selection.tagStatus: unknown variant `sometimes`",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1, "colour": "red"}"#)]),
                "rules[0].selection.colour: unknown field `colour`",
            ),
            (
                policy(&[rule(1, r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1, "countUnit": null}"#)]),
                "rules[0].selection.countUnit: null is not a value here",
            ),
            ("{ not json".into(), "not valid JSON or YAML"),
        ];
        for (text, want) in cases {
            let got = problems(&text);
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{text}\nwanted {want:?}, got {got:?}"
            );
        }
        let many: Vec<String> = (1..=51)
            .map(|i| {
                rule(
                    i,
                    &format!(r#"{{"tagStatus": "tagged", "tagPrefixList": ["v{i}-"], "countType": "imageCountMoreThan", "countNumber": 1}}"#),
                )
            })
            .collect();
        assert!(problems(&policy(&many))[0].starts_with("rules: at most 50 rules"));
        let long = format!("{{\"rules\": [], \"x\": \"{}\"}}", "a".repeat(MAX_TEXT));
        assert!(problems(&long)[0].starts_with("at most 30720 characters"));
    }

    #[test]
    fn yaml_and_ecr_request_shapes_are_read_too() {
        let yaml = "rules:\n  - rulePriority: 1\n    description: keep ten\n    selection:\n      tagStatus: any\n      countType: imageCountMoreThan\n      countNumber: 10\n    action:\n      type: expire\n";
        let p = LifecyclePolicy::parse(yaml).unwrap();
        assert_eq!(p.rules[0].selection.count_number, 10);
        assert_eq!(p.rules[0].description.as_deref(), Some("keep ten"));
        let text = serde_json::to_string(&p).unwrap();
        let wrapped = serde_json::json!({"repositoryName": "app", "lifecyclePolicyText": text});
        assert_eq!(LifecyclePolicy::parse(&wrapped.to_string()).unwrap(), p);
    }
}
