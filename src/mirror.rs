//! The mirroring model both sides share: replication rules (ECR's replication configuration,
//! with remote registries as destinations), how they are read and checked, and which
//! destinations a pushed repository goes to; where a sync reads from and writes to.

use crate::names::{Digest, OwnHosts, RepoName, Tag};
use crate::remote::{is_registry_host, parse_registry, RemoteRef};
use serde::{Deserialize, Serialize};

/// ECR's limits: rules per configuration, destinations in all, filters per rule.
pub const MAX_RULES: usize = 10;
pub const MAX_DESTINATIONS: usize = 25;
pub const MAX_FILTERS: usize = 100;

/// The replication configuration (ECR's `replicationConfiguration`): an empty one replicates
/// nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationConfiguration {
    pub rules: Vec<ReplicationRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationRule {
    pub destinations: Vec<ReplicationDestination>,
    /// Which repositories the rule takes; none means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_filters: Vec<RepositoryFilter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationDestination {
    /// `host[:port]` of a remote registry.
    pub registry: String,
    /// Put before each repository's name there (`mirror/` sends `team/app` to
    /// `mirror/team/app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryFilter {
    pub filter: String,
    pub filter_type: FilterType,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum FilterType {
    #[serde(rename = "PREFIX_MATCH")]
    PrefixMatch,
}

/// A document refused, each problem with the path of what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid replication configuration: {}", .0.join("; "))]
pub struct InvalidReplication(pub Vec<String>);

/// ECR's request shape wraps the rules (`{"replicationConfiguration": {"rules": [...]}}`);
/// both that and the bare configuration are read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    #[serde(rename = "replicationConfiguration")]
    configuration: serde_json::Value,
}

impl ReplicationConfiguration {
    /// Reads a configuration from JSON or YAML and checks it; `own` are the names this
    /// registry answers to (a rule may not send images back to it).
    pub fn parse(text: &str, own: &OwnHosts) -> Result<Self, InvalidReplication> {
        let one = |path: &str, message: String| InvalidReplication(vec![at(path, &message)]);
        let value = crate::nesting::json_or_yaml(text).map_err(|e| one("", e))?;
        let (value, prefix) = match serde_json::from_value::<Wrapped>(value.clone()) {
            Ok(w) => (w.configuration, "replicationConfiguration."),
            Err(_) => (value, ""),
        };
        let config: ReplicationConfiguration =
            serde_path_to_error::deserialize(&value).map_err(|e| {
                let path = e.path().to_string();
                let path = if path == "." {
                    prefix.trim_end_matches('.').to_string()
                } else {
                    format!("{prefix}{path}")
                };
                one(&path, e.inner().to_string())
            })?;
        let mut config = config;
        let mut errors = Vec::new();
        if config.rules.len() > MAX_RULES {
            errors.push(at(
                &format!("{prefix}rules"),
                &format!("at most {MAX_RULES} rules, not {}", config.rules.len()),
            ));
        }
        let mut destinations = std::collections::BTreeSet::new();
        for (i, rule) in config.rules.iter_mut().enumerate() {
            let path = format!("{prefix}rules[{i}]");
            if rule.destinations.is_empty() {
                errors.push(at(
                    &format!("{path}.destinations"),
                    "a rule needs at least one destination",
                ));
            }
            for (j, d) in rule.destinations.iter_mut().enumerate() {
                let path = format!("{path}.destinations[{j}]");
                match parse_registry(&d.registry) {
                    Ok(host) if own.contains(&host) => errors.push(at(
                        &format!("{path}.registry"),
                        &format!("{host} is this registry: an image cannot replicate to itself"),
                    )),
                    Ok(host) => d.registry = host,
                    Err(e) => errors.push(at(&format!("{path}.registry"), &e.to_string())),
                }
                if let Some(p) = &d.repository_prefix {
                    if let Err(e) = check_prefix(p) {
                        errors.push(at(&format!("{path}.repositoryPrefix"), &e));
                    }
                }
                destinations.insert((d.registry.clone(), d.repository_prefix.clone()));
            }
            if rule.repository_filters.len() > MAX_FILTERS {
                errors.push(at(
                    &format!("{path}.repositoryFilters"),
                    &format!("at most {MAX_FILTERS} filters per rule"),
                ));
            }
            for (j, f) in rule.repository_filters.iter().enumerate() {
                if let Err(e) = check_prefix(&f.filter) {
                    errors.push(at(&format!("{path}.repositoryFilters[{j}].filter"), &e));
                }
            }
        }
        if destinations.len() > MAX_DESTINATIONS {
            errors.push(at(
                &format!("{prefix}rules"),
                &format!(
                    "at most {MAX_DESTINATIONS} destinations in all, not {}",
                    destinations.len()
                ),
            ));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(InvalidReplication(errors))
        }
    }

    /// Where an image pushed to `repo` goes: each destination once, as (registry, the
    /// repository there).
    pub fn destinations_for(&self, repo: &RepoName) -> Vec<(String, RepoName)> {
        let mut out: Vec<(String, RepoName)> = Vec::new();
        for rule in &self.rules {
            let matches = rule.repository_filters.is_empty()
                || rule
                    .repository_filters
                    .iter()
                    .any(|f| repo.as_str().starts_with(&f.filter));
            if !matches {
                continue;
            }
            for d in &rule.destinations {
                let name = match &d.repository_prefix {
                    Some(p) => format!("{}/{repo}", p.trim_end_matches('/')),
                    None => repo.to_string(),
                };
                // A prefix that makes the name too long cannot take this repository.
                let Ok(name) = name.parse::<RepoName>() else {
                    continue;
                };
                let entry = (d.registry.clone(), name);
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }
}

fn at(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// A repository prefix: the start of a repository name (`team/`, `team/ap`).
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 256 {
        return Err("must be 1 to 256 characters".into());
    }
    let ok = prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
    if !ok || prefix.starts_with(['/', '.', '_', '-']) || prefix.contains("//") {
        return Err(format!(
            "{prefix:?} is not the start of a repository name (lowercase letters, digits, \
             . _ - and /)"
        ));
    }
    Ok(())
}

/// One end of a sync: a repository of this registry, or of another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local {
        repository: RepoName,
        tag: Option<Tag>,
        digest: Option<Digest>,
    },
    Remote(RemoteRef),
}

impl Location {
    /// Reads `team/app[:tag][@digest]` (here) or `host[:port]/team/app[...]` (a remote; one
    /// of this registry's own names is here too).
    pub fn parse(text: &str, own: &OwnHosts) -> Result<Location, String> {
        let first = text.split('/').next().unwrap_or("");
        if text.contains('/') && is_registry_host(first) {
            let r: RemoteRef = text.parse().map_err(|e| format!("{text}: {e}"))?;
            if !own.contains(&r.registry) {
                return Ok(Location::Remote(r));
            }
            return Ok(Location::Local {
                repository: r.repository,
                tag: r.tag,
                digest: r.digest,
            });
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(d.parse::<Digest>().map_err(|e| format!("{text}: {e}"))?),
            ),
            None => (text, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) => (
                name,
                Some(tag.parse::<Tag>().map_err(|e| format!("{text}: {e}"))?),
            ),
            None => (rest, None),
        };
        let repository = name
            .parse::<RepoName>()
            .map_err(|e| format!("{text}: {e}"))?;
        Ok(Location::Local {
            repository,
            tag,
            digest,
        })
    }

    pub fn tag(&self) -> Option<&Tag> {
        match self {
            Location::Local { tag, .. } => tag.as_ref(),
            Location::Remote(r) => r.tag.as_ref(),
        }
    }

    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Location::Local { digest, .. } => digest.as_ref(),
            Location::Remote(r) => r.digest.as_ref(),
        }
    }

    pub fn repository(&self) -> &RepoName {
        match self {
            Location::Local { repository, .. } => repository,
            Location::Remote(r) => &r.repository,
        }
    }

    /// The repository as the user reads it (`team/app` here, `host/team/app` remote).
    pub fn repository_label(&self) -> String {
        match self {
            Location::Local { repository, .. } => repository.to_string(),
            Location::Remote(r) => format!("{}/{}", r.registry, r.repository),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnHosts {
        OwnHosts::new(Some("127.0.0.1:5000".parse().unwrap()), None, &[])
    }

    #[test]
    fn rules_are_read_checked_and_matched() {
        let text = r#"{"rules": [{"destinations": [{"registry": "https://Reg.example:5000/"},
            {"registry": "b.example", "repositoryPrefix": "mirror/"}],
            "repositoryFilters": [{"filter": "team/", "filterType": "PREFIX_MATCH"}]}]}"#;
        let c = ReplicationConfiguration::parse(text, &own()).unwrap();
        assert_eq!(c.rules[0].destinations[0].registry, "reg.example:5000");
        let team: RepoName = "team/app".parse().unwrap();
        assert_eq!(
            c.destinations_for(&team),
            vec![
                ("reg.example:5000".to_string(), team.clone()),
                ("b.example".to_string(), "mirror/team/app".parse().unwrap()),
            ]
        );
        assert!(c.destinations_for(&"other/app".parse().unwrap()).is_empty());

        let wrapped = format!("{{\"replicationConfiguration\": {text}}}");
        assert_eq!(
            ReplicationConfiguration::parse(&wrapped, &own()).unwrap(),
            c
        );
        let yaml = "rules:\n  - destinations:\n      - registry: reg.example:5000\n";
        let y = ReplicationConfiguration::parse(yaml, &own()).unwrap();
        assert_eq!(y.destinations_for(&team).len(), 1);
    }

    #[test]
    fn bad_rules_are_refused_with_their_path() {
        let err = |text: &str| ReplicationConfiguration::parse(text, &own()).unwrap_err().0;
        let e = err(r#"{"rules": [{"destinations": [{"registry": "no such host!"}]}]}"#);
        assert!(
            e[0].starts_with("rules[0].destinations[0].registry: "),
            "{e:?}"
        );
        let e = err(r#"{"rules": [{"destinations": [{"registry": "localhost:5000"}]}]}"#);
        assert!(e[0].contains("this registry"), "{e:?}");
        let e = err(
            r#"{"rules": [{"destinations": [], "repositoryFilters": [{"filter": "Team", "filterType": "PREFIX_MATCH"}]}]}"#,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[1].starts_with("rules[0].repositoryFilters[0].filter: "),
            "{e:?}"
        );
        let e = err(r#"{"rules": [{"destinations": [{"registry": "a.b", "region": "x"}]}]}"#);
        assert!(
            e[0].starts_with("rules[0].destinations[0].region: unknown field"),
            "{e:?}"
        );
        let e = err(
            r#"{"rules": [{"destinations": [{"registry": "a.b"}], "repositoryFilters": [{"filter": "a", "filterType": "WILDCARD"}]}]}"#,
        );
        assert!(
            e[0].starts_with("rules[0].repositoryFilters[0].filterType: "),
            "{e:?}"
        );
        let e = err("rules: [unclosed");
        assert!(e[0].starts_with("not valid JSON or YAML"), "{e:?}");
        let many = format!(
            "{{\"rules\": [{}]}}",
            [r#"{"destinations": [{"registry": "a.b"}]}"#; 11].join(",")
        );
        assert!(err(&many)[0].contains("at most 10 rules"));
    }

    #[test]
    fn locations_are_here_or_remote() {
        let here = Location::parse("team/app:v1", &own()).unwrap();
        assert_eq!(here.repository().as_str(), "team/app");
        assert_eq!(here.tag().unwrap().as_str(), "v1");
        assert!(matches!(here, Location::Local { .. }));
        let ours = Location::parse("localhost:5000/team/app", &own()).unwrap();
        assert!(matches!(ours, Location::Local { .. }));
        let remote = Location::parse(
            "reg.example:5000/team/app@sha256:".to_string().as_str(),
            &own(),
        );
        assert!(remote.is_err());
        let remote = Location::parse("reg.example:5000/team/app:v2", &own()).unwrap();
        assert_eq!(remote.repository_label(), "reg.example:5000/team/app");
        let hub = Location::parse("docker.io/busybox", &own()).unwrap();
        assert_eq!(hub.repository().as_str(), "library/busybox");
        assert!(Location::parse("Team/App", &own()).is_err());
    }
}
