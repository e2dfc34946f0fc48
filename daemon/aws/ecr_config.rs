//! ECR's configuration operations: repository and registry policies, lifecycle policies and
//! their previews, replication, pull-through cache rules and resource tags. Each calls the
//! control API's function for it (`control::{auth, lifecycle, mirror, repos}`) and only
//! translates: ECR's member names and epoch times, and nothing of ecrl's own additions.

use super::ecr::Gate;
use super::{decode, paged, repo_name, string, to_aws, unsupported, AwsError, Out};
use crate::control::{auth as control_auth, lifecycle, mirror, repos};
use crate::registry::Shared;
use ecrl::api::mirror::CacheRule;
use ecrl::names::RepoName;
use serde_json::{json, Value};

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

/// `value` in ECR's shape: epoch times, and only the members ECR's output has.
fn shaped(value: impl serde::Serialize, members: &[&str]) -> Result<Out, AwsError> {
    let mut value = to_aws(value)?;
    if let Value::Object(map) = &mut value {
        map.retain(|k, _| members.contains(&k.as_str()));
    }
    Ok(value.into())
}

const REPOSITORY_POLICY: &[&str] = &["registryId", "repositoryName", "policyText"];
const REGISTRY_POLICY: &[&str] = &["registryId", "policyText"];
const LIFECYCLE_POLICY: &[&str] = &[
    "registryId",
    "repositoryName",
    "lifecyclePolicyText",
    "lastEvaluatedAt",
];

pub(super) async fn call(
    state: &Shared,
    gate: &Gate<'_>,
    op: &str,
    input: &Value,
) -> Result<Out, AwsError> {
    let may = |action, repo: Option<&RepoName>| gate.may(action, repo);
    let repo = |action| gate.repo(action);
    let s = || state.clone();
    match op {
        // Policies.
        "SetRepositoryPolicy" => {
            repo("ecr:SetRepositoryPolicy")?;
            let set = control_auth::set_repo_policy(s(), decode(input)?).await?;
            shaped(set, REPOSITORY_POLICY)
        }
        "GetRepositoryPolicy" => {
            repo("ecr:GetRepositoryPolicy")?;
            let got = control_auth::get_repo_policy(s(), decode(input)?).await?;
            shaped(got, REPOSITORY_POLICY)
        }
        "DeleteRepositoryPolicy" => {
            repo("ecr:DeleteRepositoryPolicy")?;
            let old = control_auth::delete_repo_policy(s(), decode(input)?).await?;
            shaped(old, REPOSITORY_POLICY)
        }
        "PutRegistryPolicy" => {
            may("ecr:PutRegistryPolicy", None)?;
            let set = control_auth::put_registry_policy(s(), decode(input)?).await?;
            shaped(set, REGISTRY_POLICY)
        }
        "GetRegistryPolicy" => {
            may("ecr:GetRegistryPolicy", None)?;
            let got = control_auth::get_registry_policy(s(), Default::default())
                .await
                .map_err(registry_policy_error)?;
            shaped(got, REGISTRY_POLICY)
        }
        "DeleteRegistryPolicy" => {
            may("ecr:DeleteRegistryPolicy", None)?;
            let old = control_auth::delete_registry_policy(s(), Default::default())
                .await
                .map_err(registry_policy_error)?;
            shaped(old, REGISTRY_POLICY)
        }
        // Lifecycle policies.
        "PutLifecyclePolicy" => {
            repo("ecr:PutLifecyclePolicy")?;
            let set = lifecycle::put(s(), decode(input)?).await?;
            shaped(set, LIFECYCLE_POLICY)
        }
        "GetLifecyclePolicy" => {
            repo("ecr:GetLifecyclePolicy")?;
            let got = lifecycle::get(s(), decode(input)?).await?;
            shaped(got, LIFECYCLE_POLICY)
        }
        "DeleteLifecyclePolicy" => {
            repo("ecr:DeleteLifecyclePolicy")?;
            let old = lifecycle::delete(s(), decode(input)?).await?;
            shaped(old, LIFECYCLE_POLICY)
        }
        "StartLifecyclePolicyPreview" => {
            let name = repo("ecr:StartLifecyclePolicyPreview")?;
            start_preview(state, &name, input).await
        }
        "GetLifecyclePolicyPreview" => {
            let name = repo("ecr:GetLifecyclePolicyPreview")?;
            get_preview(state, &name, input).await
        }
        // Replication.
        "DescribeRegistry" => {
            may("ecr:DescribeRegistry", None)?;
            let config = mirror::get_replication(s(), Default::default()).await?;
            Ok(json!({
                "registryId": state.meta.account_id(),
                "replicationConfiguration": ecr_replication(state, &config),
            })
            .into())
        }
        "PutReplicationConfiguration" => {
            may("ecr:PutReplicationConfiguration", None)?;
            let document = ecrl_replication(&input["replicationConfiguration"])?;
            let config = mirror::put_replication(
                s(),
                ecrl::api::mirror::PutReplicationRequest {
                    document: document.to_string(),
                },
            )
            .await?;
            Ok(json!({ "replicationConfiguration": ecr_replication(state, &config) }).into())
        }
        "DescribeImageReplicationStatus" => {
            let name = repo("ecr:DescribeImageReplicationStatus")?;
            replication_status(state, &name, input).await
        }
        // Pull-through cache rules.
        "CreatePullThroughCacheRule" => {
            let prefix = string(input, "ecrRepositoryPrefix")?;
            may("ecr:CreatePullThroughCacheRule", None)?;
            no_credential_arn(input)?;
            if find_rule(state, prefix).is_ok() {
                return Err(AwsError::client(
                    "PullThroughCacheRuleAlreadyExistsException",
                    format!("a pull-through cache rule with prefix {prefix} already exists"),
                ));
            }
            let request = ecrl::api::mirror::CreateCacheRuleRequest {
                ecr_repository_prefix: prefix.to_string(),
                upstream_registry_url: string(input, "upstreamRegistryUrl")?.to_string(),
                upstream_repository_prefix: input["upstreamRepositoryPrefix"]
                    .as_str()
                    .map(str::to_string),
                ..Default::default()
            };
            let rule = mirror::create_cache_rule(s(), request).await?;
            let mut rule = ecr_rule(&rule)?;
            forget(&mut rule, &["updatedAt"]);
            Ok(rule.into())
        }
        "DescribePullThroughCacheRules" => {
            may("ecr:DescribePullThroughCacheRules", None)?;
            let mut rules = mirror::list_cache_rules(s(), Default::default())
                .await?
                .pull_through_cache_rules;
            if let Some(prefixes) = input["ecrRepositoryPrefixes"].as_array() {
                let mut named = Vec::new();
                for prefix in prefixes {
                    named.push(find_rule(state, prefix.as_str().unwrap_or_default())?);
                }
                rules = named;
            }
            let rules: Vec<Value> = rules.iter().map(ecr_rule).collect::<Result<_, _>>()?;
            paged(input, "pullThroughCacheRules", Value::Array(rules)).map(Out::from)
        }
        "DeletePullThroughCacheRule" => {
            let prefix = string(input, "ecrRepositoryPrefix")?;
            may("ecr:DeletePullThroughCacheRule", None)?;
            find_rule(state, prefix)?;
            let rule = mirror::delete_cache_rule(s(), cache_rule_request(prefix)).await?;
            let mut rule = ecr_rule(&rule)?;
            forget(&mut rule, &["updatedAt", "upstreamRegistry"]);
            Ok(rule.into())
        }
        "ValidatePullThroughCacheRule" => {
            let prefix = string(input, "ecrRepositoryPrefix")?;
            may("ecr:ValidatePullThroughCacheRule", None)?;
            let rule = find_rule(state, prefix)?;
            let checked = mirror::validate_cache_rule(s(), cache_rule_request(prefix)).await?;
            let mut out = json!({
                "ecrRepositoryPrefix": rule.ecr_repository_prefix,
                "registryId": rule.registry_id,
                "upstreamRegistryUrl": rule.upstream_registry_url,
                "isValid": checked.is_valid,
            });
            if let Some(p) = &rule.upstream_repository_prefix {
                out["upstreamRepositoryPrefix"] = json!(p);
            }
            if let Some(f) = checked.failure {
                out["failure"] = json!(f);
            }
            Ok(out.into())
        }
        "UpdatePullThroughCacheRule" => {
            let prefix = string(input, "ecrRepositoryPrefix")?;
            may("ecr:UpdatePullThroughCacheRule", None)?;
            let rule = find_rule(state, prefix)?;
            Err(invalid(format!(
                "UpdatePullThroughCacheRule changes a rule's credentials, and ecrl's rules take \
                 theirs from 'ecrl login {}' (or docker's config) each time they reach the \
                 upstream: log in again there to change them",
                rule.upstream_registry_url
            )))
        }
        // Resource tags.
        "ListTagsForResource" => {
            let name = tagged_repo(state, input)?;
            may("ecr:ListTagsForResource", Some(&name))?;
            let tags = repos::resource_tags(state, &name)?;
            Ok(json!({ "tags": tags }).into())
        }
        "TagResource" => {
            let name = tagged_repo(state, input)?;
            may("ecr:TagResource", Some(&name))?;
            let add = decode(&input["tags"])?;
            repos::retag_resource(state, &name, add, &[]).await?;
            Ok(json!({}).into())
        }
        "UntagResource" => {
            let name = tagged_repo(state, input)?;
            may("ecr:UntagResource", Some(&name))?;
            let keys: Vec<String> = decode(&input["tagKeys"])?;
            repos::retag_resource(state, &name, Vec::new(), &keys).await?;
            Ok(json!({}).into())
        }
        _ => Err(unsupported("ECR", op)),
    }
}

/// No registry policy is ECR's RegistryPolicyNotFoundException (the control API has one
/// code for every missing policy).
fn registry_policy_error(e: ecrl::api::ApiError) -> AwsError {
    if e.code == ecrl::api::ErrorCode::PolicyNotFound {
        AwsError::client("RegistryPolicyNotFoundException", e.message)
    } else {
        e.into()
    }
}

/// The repository a `resourceArn` names (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`, of
/// this registry).
fn tagged_repo(state: &Shared, input: &Value) -> Result<RepoName, AwsError> {
    let arn = string(input, "resourceArn")?;
    let prefix = format!(
        "arn:aws:ecr:{}:{}:repository/",
        state.config.region,
        state.meta.account_id()
    );
    let name = arn.strip_prefix(&prefix).ok_or_else(|| {
        invalid(format!(
            "resourceArn {arn:?} is not a repository of this registry ({prefix}NAME)"
        ))
    })?;
    repo_name(name)
}

/// ECR's Start/GetLifecyclePolicyPreview run at once here: Start checks the policy (the
/// repository's own when none is given) and remembers it; Get answers what it would expire
/// now.
async fn start_preview(state: &Shared, name: &RepoName, input: &Value) -> Result<Out, AwsError> {
    let preview = lifecycle::preview(
        state.clone(),
        ecrl::api::lifecycle::PreviewLifecyclePolicyRequest {
            repository_name: name.to_string(),
            lifecycle_policy_text: input["lifecyclePolicyText"].as_str().map(str::to_string),
        },
    )
    .await?;
    state.remember_preview(name, preview.lifecycle_policy_text.clone());
    Ok(json!({
        "registryId": preview.registry_id,
        "repositoryName": preview.repository_name,
        "lifecyclePolicyText": preview.lifecycle_policy_text,
        "status": preview.status,
    })
    .into())
}

async fn get_preview(state: &Shared, name: &RepoName, input: &Value) -> Result<Out, AwsError> {
    let Some(text) = state.started_preview(name) else {
        return Err(AwsError::client(
            "LifecyclePolicyPreviewNotFoundException",
            format!("no lifecycle policy preview was started for repository {name}"),
        ));
    };
    let preview = lifecycle::preview(
        state.clone(),
        ecrl::api::lifecycle::PreviewLifecyclePolicyRequest {
            repository_name: name.to_string(),
            lifecycle_policy_text: Some(text),
        },
    )
    .await?;
    let mut results = preview.preview_results.clone();
    if let Some(ids) = input["imageIds"].as_array() {
        results.retain(|r| {
            ids.iter().any(|id| {
                id["imageDigest"].as_str() == Some(&r.image_digest)
                    || id["imageTag"]
                        .as_str()
                        .is_some_and(|t| r.image_tags.iter().any(|x| x == t))
            })
        });
    }
    match input["filter"]["tagStatus"].as_str() {
        None | Some("ANY") => {}
        Some("TAGGED") => results.retain(|r| !r.image_tags.is_empty()),
        Some("UNTAGGED") => results.retain(|r| r.image_tags.is_empty()),
        Some(other) => {
            return Err(invalid(format!(
                "filter.tagStatus {other:?}: expected TAGGED, UNTAGGED or ANY"
            )))
        }
    }
    let mut out = paged(input, "previewResults", to_aws(results)?)?;
    out["registryId"] = json!(preview.registry_id);
    out["repositoryName"] = json!(preview.repository_name);
    out["lifecyclePolicyText"] = json!(preview.lifecycle_policy_text);
    out["status"] = json!(preview.status);
    out["summary"] = to_aws(&preview.summary)?;
    Ok(out.into())
}

/// ECR names a replication destination by region and registry id; ecrl's destinations are
/// registries, so the destination's `region` carries the registry (`host[:port]`).
fn ecrl_replication(config: &Value) -> Result<Value, AwsError> {
    let Some(rules) = config["rules"].as_array() else {
        return Err(invalid("replicationConfiguration.rules is required"));
    };
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut destinations = Vec::new();
        for (j, d) in rule["destinations"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let registry = d["region"].as_str().ok_or_else(|| {
                invalid(format!(
                    "replicationConfiguration.rules[{i}].destinations[{j}].region: the \
                     destination registry (host[:port]) is required"
                ))
            })?;
            destinations.push(json!({ "registry": registry }));
        }
        let mut r = json!({ "destinations": destinations });
        if let Some(filters) = rule.get("repositoryFilters") {
            r["repositoryFilters"] = filters.clone();
        }
        out.push(r);
    }
    Ok(json!({ "rules": out }))
}

fn ecr_replication(state: &Shared, config: &ecrl::mirror::ReplicationConfiguration) -> Value {
    let rules: Vec<Value> = config
        .rules
        .iter()
        .map(|rule| {
            let destinations: Vec<Value> = rule
                .destinations
                .iter()
                .map(|d| json!({"region": d.registry, "registryId": state.meta.account_id()}))
                .collect();
            let mut r = json!({ "destinations": destinations });
            if !rule.repository_filters.is_empty() {
                r["repositoryFilters"] = json!(rule.repository_filters);
            }
            r
        })
        .collect();
    json!({ "rules": rules })
}

async fn replication_status(
    state: &Shared,
    name: &RepoName,
    input: &Value,
) -> Result<Out, AwsError> {
    let id = &input["imageId"];
    let reference = match (id["imageDigest"].as_str(), id["imageTag"].as_str()) {
        (Some(d), _) => d,
        (None, Some(t)) => t,
        (None, None) => return Err(invalid("imageId needs an imageDigest or an imageTag")),
    };
    let status = mirror::replication_status(
        state.clone(),
        ecrl::api::mirror::ReplicationStatusRequest {
            repository_name: name.to_string(),
            reference: Some(reference.to_string()),
        },
    )
    .await?;
    let statuses: Vec<Value> = status
        .replication_statuses
        .iter()
        .map(|s| {
            let mut v = json!({
                "region": s.registry,
                "registryId": state.meta.account_id(),
                "status": s.status,
            });
            if let Some(code) = &s.failure_code {
                v["failureCode"] = json!(code);
            }
            v
        })
        .collect();
    let mut out = json!({
        "repositoryName": status.repository_name,
        "imageId": status.image_id,
        "replicationStatuses": statuses,
    });
    if let Value::Object(map) = &mut out["imageId"] {
        map.retain(|_, v| !v.is_null());
    }
    Ok(out.into())
}

fn cache_rule_request(prefix: &str) -> ecrl::api::mirror::CacheRuleRequest {
    ecrl::api::mirror::CacheRuleRequest {
        ecr_repository_prefix: prefix.to_string(),
    }
}

fn find_rule(state: &Shared, prefix: &str) -> Result<CacheRule, AwsError> {
    crate::mirror::cache::list(state)
        .into_iter()
        .find(|r| r.ecr_repository_prefix == prefix)
        .ok_or_else(|| {
            AwsError::client(
                "PullThroughCacheRuleNotFoundException",
                format!("no pull-through cache rule has the prefix {prefix:?}"),
            )
        })
}

/// ECR reads an upstream's credentials from a Secrets Manager secret; ecrl from its own
/// logins, so a `credentialArn` is refused rather than silently unused.
fn no_credential_arn(input: &Value) -> Result<(), AwsError> {
    if input.get("credentialArn").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "credentialArn names an AWS Secrets Manager secret, which ecrl does not read: \
             ecrl takes the upstream's credentials from 'ecrl login UPSTREAM' (or docker's \
             config); log in there and leave credentialArn out",
        ));
    }
    Ok(())
}

/// ECR's name for a well-known upstream (`upstreamRegistry`).
fn upstream_kind(url: &str) -> Option<&'static str> {
    let host = url.split('/').next().unwrap_or(url);
    Some(match host {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => "docker-hub",
        "quay.io" => "quay",
        "ghcr.io" => "github-container-registry",
        "registry.k8s.io" => "k8s",
        "public.ecr.aws" => "ecr-public",
        "registry.gitlab.com" => "gitlab-container-registry",
        "cgr.dev" => "chainguard",
        h if h.ends_with(".azurecr.io") => "azure-container-registry",
        h if h.contains(".dkr.ecr.") && h.ends_with(".amazonaws.com") => "ecr",
        _ => return None,
    })
}

/// Drops members an operation's answer does not have.
fn forget(value: &mut Value, members: &[&str]) {
    if let Value::Object(map) = value {
        map.retain(|k, _| !members.contains(&k.as_str()));
    }
}

/// A rule in ECR's `PullThroughCacheRule` shape.
fn ecr_rule(rule: &CacheRule) -> Result<Value, AwsError> {
    let mut out = to_aws(json!({
        "ecrRepositoryPrefix": rule.ecr_repository_prefix,
        "upstreamRegistryUrl": rule.upstream_registry_url,
        "registryId": rule.registry_id,
        "createdAt": rule.created_at,
        "updatedAt": rule.updated_at,
    }))?;
    if let Some(p) = &rule.upstream_repository_prefix {
        out["upstreamRepositoryPrefix"] = json!(p);
    }
    if let Some(kind) = upstream_kind(&rule.upstream_registry_url) {
        out["upstreamRegistry"] = json!(kind);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_destinations_carry_the_registry_in_region() {
        let ecr = json!({"rules": [{"destinations": [{"region": "backup:5000", "registryId": "1"}],
                                    "repositoryFilters": [{"filter": "team/", "filterType": "PREFIX_MATCH"}]}]});
        assert_eq!(
            ecrl_replication(&ecr).unwrap(),
            json!({"rules": [{"destinations": [{"registry": "backup:5000"}],
                              "repositoryFilters": [{"filter": "team/", "filterType": "PREFIX_MATCH"}]}]})
        );
        let missing = json!({"rules": [{"destinations": [{"registryId": "1"}]}]});
        let e = ecrl_replication(&missing).unwrap_err();
        assert!(
            e.message.contains("rules[0].destinations[0].region"),
            "{}",
            e.message
        );
        assert!(ecrl_replication(&json!({})).is_err());
    }

    #[test]
    fn well_known_upstreams_get_ecr_names() {
        assert_eq!(upstream_kind("docker.io"), Some("docker-hub"));
        assert_eq!(upstream_kind("ghcr.io"), Some("github-container-registry"));
        assert_eq!(
            upstream_kind("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Some("ecr")
        );
        assert_eq!(upstream_kind("localhost:5001"), None);
    }
}
