//! ECS clusters (CreateCluster, DescribeClusters, ListClusters, DeleteCluster) and the tags
//! of ECS resources (TagResource, UntagResource, ListTagsForResource), for both doors.
//!
//! ecrl has one container instance, the local runtime; a cluster groups tasks, as on ECS.
//! `default` always exists: RunTask without a cluster runs there, it is described even if
//! never created, and it cannot be deleted.

use super::{endpoint, Peer, Shared};
use crate::metadata::ClusterRefusal;
use crate::metadata::Index;
use axum::Router;
use ecrl::api::tasks::*;
use ecrl::api::{ApiError, Empty, ErrorCode};
use ecrl::taskdef::Tag;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = endpoint::<CreateCluster, _, _>(router, |s: Shared, _: Peer, r| async move {
        create(&s, r).await
    });
    let router = endpoint::<DescribeClusters, _, _>(router, |s: Shared, _: Peer, r| async move {
        describe(&s, r)
    });
    let router =
        endpoint::<ListClusters, _, _>(router, |s: Shared, _: Peer, _: Empty| async move {
            Ok(list(&s))
        });
    endpoint::<DeleteCluster, _, _>(router, |s: Shared, _: Peer, r| async move {
        delete(&s, r).await
    })
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message)
}

/// ECS's quota of clusters per region, which ecrl keeps too (each is a row and a map entry).
const MAX_CLUSTERS: usize = 10_000;

/// ECS's rule for cluster names: 1-255 letters, digits, hyphens and underscores.
fn check_name(name: &str) -> Result<(), ApiError> {
    check_ecs_name("cluster", name)
}

/// ECS's rule for cluster and service names (`what` names which in the error).
pub(crate) fn check_ecs_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(format!(
            "{what} name {name:?}: up to 255 letters (uppercase and lowercase), numbers, \
             underscores, and hyphens are allowed"
        )));
    }
    Ok(())
}

pub(crate) fn cluster_arn(state: &Shared, name: &str) -> String {
    state.ecs_arn(&format!("cluster/{name}"))
}

/// The name a cluster reference (name or ARN) gives, not checked for existence.
fn name_of(state: &Shared, reference: &str) -> Result<String, ApiError> {
    let name = match reference.strip_prefix("arn:") {
        Some(_) => {
            let prefix = cluster_arn(state, "");
            reference
                .strip_prefix(&prefix)
                .ok_or_else(|| {
                    invalid(format!(
                        "{reference:?} is not a cluster ARN of this registry ({prefix}NAME)"
                    ))
                })?
                .to_string()
        }
        None => reference.to_string(),
    };
    check_name(&name)?;
    Ok(name)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ClusterNotFound,
        format!("cluster {name} not found; 'ecrl cluster list' shows the ones that exist"),
    )
}

/// The name of an existing cluster (`default` when none is named).
pub(crate) fn resolve(state: &Shared, reference: Option<&str>) -> Result<String, ApiError> {
    let name = match reference {
        None | Some("") => return Ok(DEFAULT_CLUSTER.to_string()),
        Some(r) => name_of(state, r)?,
    };
    if name == DEFAULT_CLUSTER || state.meta.read().clusters.contains_key(&name) {
        Ok(name)
    } else {
        Err(not_found(&name))
    }
}

/// The tags of the ECS resource `arn`: those set through the tag operations, else `own`
/// (what it was registered or run with).
pub(crate) fn tags_of(index: &Index, arn: &str, own: &[Tag]) -> Vec<Tag> {
    index
        .ecs_tags
        .get(arn)
        .cloned()
        .unwrap_or_else(|| own.to_vec())
}

/// A cluster as DescribeClusters answers it, its task counts as they are now.
fn cluster(state: &Shared, name: &str) -> Cluster {
    let arn = cluster_arn(state, name);
    let (mut running, mut pending) = (0, 0);
    for task in state.tasks.list() {
        if task.cluster_arn != arn {
            continue;
        }
        match task.last_status.as_str() {
            task_status::RUNNING => running += 1,
            task_status::PROVISIONING | task_status::PENDING => pending += 1,
            _ => {}
        }
    }
    let services = state
        .meta
        .read()
        .services
        .values()
        .filter(|s| s.cluster_arn == arn && s.status == "ACTIVE")
        .count() as u32;
    Cluster {
        tags: tags_of(&state.meta.read(), &arn, &[]),
        cluster_arn: arn,
        cluster_name: name.to_string(),
        status: "ACTIVE".into(),
        registered_container_instances_count: 1,
        running_tasks_count: running,
        pending_tasks_count: pending,
        active_services_count: services,
    }
}

/// ECS's limits on resource tags (AWS's: see `check_resource_tag`), at most 50.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    if tags.len() > super::MAX_RESOURCE_TAGS {
        return Err(invalid(format!(
            "a resource has at most {} tags",
            super::MAX_RESOURCE_TAGS
        )));
    }
    for tag in tags {
        super::check_resource_tag(
            tag.key.as_deref().unwrap_or_default(),
            tag.value.as_deref().unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// ECS's CreateCluster: creating one that exists answers it as it is.
pub(crate) async fn create(
    state: &Shared,
    req: CreateClusterRequest,
) -> Result<ClusterResponse, ApiError> {
    let name = req
        .cluster_name
        .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
    check_name(&name)?;
    check_tags(&req.tags)?;
    if name != DEFAULT_CLUSTER {
        let known = {
            let index = state.meta.read();
            (index.clusters.len(), index.clusters.contains_key(&name))
        };
        if known.0 >= MAX_CLUSTERS && !known.1 {
            return Err(invalid(format!(
                "there are {MAX_CLUSTERS} clusters already, the most ecrl keeps (as ECS's \
                 quota): delete some first"
            )));
        }
        let (_, created) = state
            .meta
            .create_cluster(name.clone(), cluster_arn(state, &name), req.tags)
            .await?;
        if created {
            tracing::info!(cluster = %name, "cluster created");
        }
    } else if !req.tags.is_empty() {
        state
            .meta
            .put_ecs_tags(cluster_arn(state, &name), req.tags)
            .await?;
    }
    Ok(ClusterResponse {
        cluster: cluster(state, &name),
    })
}

/// ECS's DescribeClusters: those that do not exist are answered in `failures`.
pub(crate) fn describe(
    state: &Shared,
    req: DescribeClustersRequest,
) -> Result<DescribeClustersResponse, ApiError> {
    let names = if req.clusters.is_empty() {
        vec![DEFAULT_CLUSTER.to_string()]
    } else {
        req.clusters
    };
    if names.len() > 100 {
        return Err(invalid("describe at most 100 clusters at once"));
    }
    let mut clusters = Vec::new();
    let mut failures = Vec::new();
    for reference in names {
        match resolve(state, Some(&reference)) {
            Ok(name) => clusters.push(cluster(state, &name)),
            Err(e) if e.code == ErrorCode::ClusterNotFound => failures.push(Failure {
                arn: match reference.starts_with("arn:") {
                    true => reference,
                    false => cluster_arn(state, &reference),
                },
                reason: "MISSING".into(),
                detail: None,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(DescribeClustersResponse { clusters, failures })
}

/// ECS's ListClusters: `default` and every cluster created, by name.
pub(crate) fn list(state: &Shared) -> ListClustersResponse {
    let mut names: Vec<String> = state.meta.read().clusters.keys().cloned().collect();
    names.push(DEFAULT_CLUSTER.to_string());
    names.sort();
    ListClustersResponse {
        cluster_arns: names.iter().map(|n| cluster_arn(state, n)).collect(),
    }
}

/// ECS's DeleteCluster: refused while a task of it is not STOPPED, and for `default`.
pub(crate) async fn delete(state: &Shared, req: ClusterRef) -> Result<ClusterResponse, ApiError> {
    let name = name_of(state, &req.cluster)?;
    if name == DEFAULT_CLUSTER {
        return Err(invalid(
            "the cluster default always exists: ecrl runs tasks there when no cluster is named",
        ));
    }
    let described = cluster(state, &name);
    match state.meta.delete_cluster(name.clone()).await? {
        Ok(_) => {
            tracing::info!(cluster = %name, "cluster deleted");
            Ok(ClusterResponse {
                cluster: Cluster {
                    status: "INACTIVE".into(),
                    ..described
                },
            })
        }
        Err(ClusterRefusal::NotFound) => Err(not_found(&name)),
        Err(ClusterRefusal::HasTasks(n)) => Err(ApiError::new(
            ErrorCode::ClusterContainsTasks,
            format!(
                "The Cluster cannot be deleted while Tasks are active: cluster {name} has {n} \
                 task(s) not STOPPED (stop them with 'ecrl task stop')"
            ),
        )),
    }
}

// --- tags --------------------------------------------------------------------------------

/// What an ECS resource ARN names, once found to exist: its tags now.
fn resource_tags(state: &Shared, arn: &str) -> Result<Vec<Tag>, ApiError> {
    let prefix = state.ecs_arn("");
    let missing = || {
        invalid(format!(
            "{arn} is not an ECS resource of this registry (a task definition, task or \
             cluster ARN starting with {prefix})"
        ))
    };
    let rest = arn.strip_prefix(&prefix).ok_or_else(missing)?;
    let (kind, path) = rest.split_once('/').ok_or_else(missing)?;
    match kind {
        "task-definition" => {
            let td = crate::tasks::defs::resolve_task_definition(&state.meta.read(), arn, false)?;
            let own = td.definition.tags.clone().unwrap_or_default();
            Ok(tags_of(&state.meta.read(), arn, &own))
        }
        "task" => {
            let task = super::tasks::find(state, arn)?;
            if task.task_arn != arn {
                return Err(ApiError::new(
                    ErrorCode::TaskNotFound,
                    format!("task {arn} not found"),
                ));
            }
            Ok(tags_of(&state.meta.read(), arn, &task.tags))
        }
        "cluster" => {
            let name = resolve(state, Some(path))?;
            Ok(tags_of(&state.meta.read(), &cluster_arn(state, &name), &[]))
        }
        _ => Err(missing()),
    }
}

/// ECS's ListTagsForResource.
pub(crate) fn list_tags(state: &Shared, arn: &str) -> Result<Vec<Tag>, ApiError> {
    resource_tags(state, arn)
}

/// ECS's TagResource: adds `tags` to the resource's, replacing the values of keys it has.
pub(crate) async fn tag(state: &Shared, arn: &str, tags: Vec<Tag>) -> Result<(), ApiError> {
    if tags.is_empty() {
        return Err(invalid("name at least one tag"));
    }
    let mut now = resource_tags(state, arn)?;
    for t in tags {
        match now.iter_mut().find(|have| have.key == t.key) {
            Some(have) => have.value = t.value,
            None => now.push(t),
        }
    }
    check_tags(&now)?;
    Ok(state.meta.put_ecs_tags(arn.to_string(), now).await?)
}

/// ECS's UntagResource: removes the tags with these keys (absent ones are no error).
pub(crate) async fn untag(state: &Shared, arn: &str, keys: &[String]) -> Result<(), ApiError> {
    let mut now = resource_tags(state, arn)?;
    now.retain(|t| !keys.iter().any(|k| Some(k) == t.key.as_ref()));
    Ok(state.meta.put_ecs_tags(arn.to_string(), now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_ecs_rules() {
        for good in ["default", "batch-jobs", "A_1", &"x".repeat(255)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(256)] {
            assert_eq!(
                check_name(bad).unwrap_err().code,
                ErrorCode::InvalidParameter
            );
        }
    }

    #[test]
    fn tags_are_bounded_as_on_ecs() {
        let tag = |k: &str, v: &str| Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        assert!(check_tags(&[tag("team", "a")]).is_ok());
        assert!(check_tags(&[tag("", "a")]).is_err());
        assert!(check_tags(&[tag(&"k".repeat(129), "a")]).is_err());
        assert!(check_tags(&[tag("k", &"v".repeat(257))]).is_err());
        let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(check_tags(&many).is_err());
    }
}
