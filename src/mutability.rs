//! Tag mutability, ECR's `imageTagMutability`, with ECR's exclusions:
//! `IMMUTABLE_WITH_EXCLUSION` keeps every tag where it is except those a filter matches (say
//! `latest`, `dev-*`), and `MUTABLE_WITH_EXCLUSION` lets every tag move except those a filter
//! matches (say `release-*`).

use serde::{Deserialize, Serialize};

/// ECR's limits: filters per repository, characters per filter.
pub const MAX_FILTERS: usize = 5;
pub const MAX_FILTER_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagMutability {
    #[default]
    Mutable,
    Immutable,
    ImmutableWithExclusion,
    MutableWithExclusion,
}

impl TagMutability {
    pub const ALL: [TagMutability; 4] = [
        TagMutability::Mutable,
        TagMutability::Immutable,
        TagMutability::ImmutableWithExclusion,
        TagMutability::MutableWithExclusion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TagMutability::Mutable => "MUTABLE",
            TagMutability::Immutable => "IMMUTABLE",
            TagMutability::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
            TagMutability::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
        }
    }

    /// One of ECR's four names (any case).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "imageTagMutability {text:?}: expected MUTABLE, IMMUTABLE, \
                     IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION"
                )
            })
    }

    /// Whether this setting takes exclusion filters (and needs at least one).
    pub fn takes_exclusions(self) -> bool {
        matches!(
            self,
            TagMutability::ImmutableWithExclusion | TagMutability::MutableWithExclusion
        )
    }

    /// Whether a tag that exists may not be moved to another image, under these filters.
    pub fn is_immutable(self, filters: &[String], tag: &str) -> bool {
        let excluded = || filters.iter().any(|f| crate::names::wildcard_match(f, tag));
        match self {
            TagMutability::Mutable => false,
            TagMutability::Immutable => true,
            TagMutability::ImmutableWithExclusion => !excluded(),
            TagMutability::MutableWithExclusion => excluded(),
        }
    }
}

/// ECR's `ImageTagMutabilityExclusionFilter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExclusionFilter {
    /// `WILDCARD`, the only type.
    pub filter_type: String,
    pub filter: String,
}

impl ExclusionFilter {
    pub fn wildcard(filter: &str) -> Self {
        ExclusionFilter {
            filter_type: "WILDCARD".into(),
            filter: filter.to_string(),
        }
    }
}

/// Checks a setting and its filters as ECR does: 1 to 5 filters with the `_WITH_EXCLUSION`
/// settings and none without; each `WILDCARD`, 1 to 128 of `0-9 a-z A-Z . _ * -`.
pub fn check(mode: TagMutability, filters: &[ExclusionFilter]) -> Result<(), String> {
    if !mode.takes_exclusions() {
        if !filters.is_empty() {
            return Err(format!(
                "imageTagMutabilityExclusionFilters are for IMMUTABLE_WITH_EXCLUSION and \
                 MUTABLE_WITH_EXCLUSION, not {}",
                mode.as_str()
            ));
        }
        return Ok(());
    }
    if filters.is_empty() || filters.len() > MAX_FILTERS {
        return Err(format!(
            "{} needs 1 to {MAX_FILTERS} imageTagMutabilityExclusionFilters, not {}",
            mode.as_str(),
            filters.len()
        ));
    }
    for (i, f) in filters.iter().enumerate() {
        if f.filter_type != "WILDCARD" {
            return Err(format!(
                "imageTagMutabilityExclusionFilters[{i}].filterType {:?}: WILDCARD is the only type",
                f.filter_type
            ));
        }
        let ok = (1..=MAX_FILTER_LEN).contains(&f.filter.len())
            && f.filter
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._*-".contains(&b));
        if !ok {
            return Err(format!(
                "imageTagMutabilityExclusionFilters[{i}].filter {:?}: 1 to {MAX_FILTER_LEN} of \
                 letters, digits, '.', '_', '-' and the wildcard '*'",
                f.filter
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exclusions_turn_the_setting_around_for_the_tags_they_match() {
        let f = filters(&["latest", "dev-*"]);
        let m = TagMutability::ImmutableWithExclusion;
        assert!(!m.is_immutable(&f, "latest"));
        assert!(!m.is_immutable(&f, "dev-42"));
        assert!(m.is_immutable(&f, "v1"));
        assert!(m.is_immutable(&f, "latest-1"));
        let m = TagMutability::MutableWithExclusion;
        assert!(m.is_immutable(&f, "dev-1"));
        assert!(!m.is_immutable(&f, "v1"));
        assert!(TagMutability::Immutable.is_immutable(&[], "x"));
        assert!(!TagMutability::Mutable.is_immutable(&f, "latest"));
    }

    #[test]
    fn settings_and_filters_are_checked_as_ecr_does() {
        let w = ExclusionFilter::wildcard;
        assert!(check(TagMutability::Mutable, &[]).is_ok());
        assert!(check(TagMutability::ImmutableWithExclusion, &[w("latest")]).is_ok());
        assert!(check(TagMutability::Immutable, &[w("latest")])
            .unwrap_err()
            .contains("not IMMUTABLE"));
        assert!(check(TagMutability::MutableWithExclusion, &[])
            .unwrap_err()
            .contains("needs 1 to 5"));
        let six: Vec<_> = (0..6).map(|i| w(&format!("t{i}"))).collect();
        assert!(check(TagMutability::MutableWithExclusion, &six).is_err());
        for bad in ["", "a b", "a/b", &"a".repeat(129)] {
            assert!(
                check(TagMutability::ImmutableWithExclusion, &[w(bad)]).is_err(),
                "{bad:?}"
            );
        }
        let prefix = ExclusionFilter {
            filter_type: "PREFIX".into(),
            filter: "a".into(),
        };
        assert!(check(TagMutability::ImmutableWithExclusion, &[prefix])
            .unwrap_err()
            .contains("WILDCARD"));
        assert_eq!(
            TagMutability::parse("immutable_with_exclusion"),
            Ok(TagMutability::ImmutableWithExclusion)
        );
        assert!(TagMutability::parse("sometimes").is_err());
    }
}
