//! Task-definition operations for the CLI: ECS's RegisterTaskDefinition,
//! DescribeTaskDefinition, ListTaskDefinitions, ListTaskDefinitionFamilies,
//! DeregisterTaskDefinition and DeleteTaskDefinitions, with ECS's filters and answers.

use super::{endpoint, Peer, Shared};
use crate::tasks::defs::{resolve, resolve_task_definition, TaskDefRef};
use axum::Router;
use ecrl::api::tasks::*;
use ecrl::api::{ApiError, ErrorCode};
use ecrl::taskdef;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router =
        endpoint::<RegisterTaskDefinition, _, _>(router, |s: Shared, _: Peer, r| async move {
            register(&s, r).await
        });
    let router =
        endpoint::<DescribeTaskDefinition, _, _>(router, |s: Shared, _: Peer, r| async move {
            describe(&s, r)
        });
    let router =
        endpoint::<ListTaskDefinitions, _, _>(router, |s: Shared, _: Peer, r| async move {
            list(&s, r)
        });
    let router =
        endpoint::<ListTaskDefinitionFamilies, _, _>(router, |s: Shared, _: Peer, r| async move {
            families(&s, r)
        });
    let router =
        endpoint::<DeregisterTaskDefinition, _, _>(router, |s: Shared, _: Peer, r| async move {
            deregister(&s, r).await
        });
    endpoint::<DeleteTaskDefinitions, _, _>(router, |s: Shared, _: Peer, r| async move {
        delete(&s, r).await
    })
}

/// ECS's status for a deleted revision, as DeleteTaskDefinitions answers it.
const STATUS_DELETE_IN_PROGRESS: &str = "DELETE_IN_PROGRESS";

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message)
}

fn response(state: &Shared, task_definition: TaskDefinition) -> TaskDefinitionResponse {
    let task_definition = task_definition.with_printed_times();
    TaskDefinitionResponse {
        tags: super::clusters::tags_of(
            &state.meta.read(),
            &task_definition.task_definition_arn,
            task_definition
                .definition
                .tags
                .as_deref()
                .unwrap_or_default(),
        ),
        ignored_fields: task_definition
            .definition
            .ignored_fields()
            .into_iter()
            .map(str::to_string)
            .collect(),
        task_definition,
    }
}

/// Every broken rule in one message, a `path: message` line each.
fn validation_message(family: &str, errors: &[taskdef::ValidationError]) -> String {
    let count = match errors.len() {
        1 => "1 error".to_string(),
        n => format!("{n} errors"),
    };
    let mut message = format!("task definition {family:?} is invalid ({count}):");
    for e in errors {
        message.push('\n');
        message.push_str(&e.to_string());
    }
    message
}

/// `status` as a list filter: ACTIVE, INACTIVE, or `default` when absent.
fn status_filter(
    status: Option<&str>,
    default: Option<&'static str>,
) -> Result<Option<&'static str>, ApiError> {
    match status {
        None => Ok(default),
        Some(s) if s == STATUS_ACTIVE => Ok(Some(STATUS_ACTIVE)),
        Some(s) if s == STATUS_INACTIVE => Ok(Some(STATUS_INACTIVE)),
        Some(other) => Err(invalid(format!(
            "status {other:?}: expected ACTIVE or INACTIVE"
        ))),
    }
}

/// A reference that must name one revision (deregister, delete): `family:revision` or ARN.
fn revision_ref(text: &str) -> Result<TaskDefRef, ApiError> {
    let reference = TaskDefRef::parse(text)?;
    if reference.revision().is_none() {
        return Err(invalid(format!(
            "{text:?} names a family, not a revision: name it as {text}:REVISION"
        )));
    }
    Ok(reference)
}

pub(crate) fn arn_prefix(state: &Shared) -> String {
    state.ecs_arn("task-definition/")
}

/// ECS's RegisterTaskDefinition: `input` (validated here) as its family's next revision.
pub(crate) async fn register(
    state: &Shared,
    input: taskdef::TaskDefinitionInput,
) -> Result<TaskDefinitionResponse, ApiError> {
    if let Err(errors) = taskdef::validate(&input) {
        return Err(invalid(validation_message(&input.family, &errors)));
    }
    let td = state
        .meta
        .register_task_definition(input, arn_prefix(state))
        .await?;
    tracing::info!(task_definition = %td.family_revision(), "task definition registered");
    Ok(response(state, td))
}

/// ECS's DescribeTaskDefinition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN.
pub(crate) fn describe(
    state: &Shared,
    req: TaskDefinitionRef,
) -> Result<TaskDefinitionResponse, ApiError> {
    let td = resolve_task_definition(&state.meta.read(), &req.task_definition, false)?;
    Ok(response(state, td))
}

/// ECS's ListTaskDefinitions: `familyPrefix` is the full family name (as ECS takes it) and
/// only ACTIVE revisions are listed unless `status` says otherwise; family order, then
/// revisions ascending.
pub(crate) fn list(
    state: &Shared,
    req: ListTaskDefinitionsRequest,
) -> Result<ListTaskDefinitionsResponse, ApiError> {
    let status = status_filter(req.status.as_deref(), Some(STATUS_ACTIVE))?;
    let index = state.meta.read();
    let task_definition_arns = index
        .task_families
        .iter()
        .filter(|(name, _)| req.family_prefix.as_ref().is_none_or(|f| *name == f))
        .flat_map(|(_, family)| family.revisions.values())
        .filter(|td| status.is_none_or(|s| td.status == s))
        .map(|td| td.task_definition_arn.clone())
        .collect();
    Ok(ListTaskDefinitionsResponse {
        task_definition_arns,
    })
}

/// ECS's ListTaskDefinitionFamilies: with ACTIVE the families that have an ACTIVE revision,
/// with INACTIVE those that have none (also those whose revisions are all deleted), without
/// a status every family ever registered.
pub(crate) fn families(
    state: &Shared,
    req: ListTaskDefinitionsRequest,
) -> Result<ListTaskDefinitionFamiliesResponse, ApiError> {
    let status = status_filter(req.status.as_deref(), None)?;
    let prefix = req.family_prefix.unwrap_or_default();
    let index = state.meta.read();
    let families = index
        .task_families
        .iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .filter(|(_, family)| match status {
            Some(STATUS_ACTIVE) => family.has_active(),
            Some(_) => !family.has_active(),
            None => true,
        })
        .map(|(name, _)| name.clone())
        .collect();
    Ok(ListTaskDefinitionFamiliesResponse { families })
}

/// ECS's DeregisterTaskDefinition of one revision (`family:revision` or ARN).
pub(crate) async fn deregister(
    state: &Shared,
    req: TaskDefinitionRef,
) -> Result<TaskDefinitionResponse, ApiError> {
    let reference = revision_ref(&req.task_definition)?;
    // Resolving first checks an ARN against the stored one.
    let td = resolve(&state.meta.read(), &reference, false)?;
    let td = state
        .meta
        .deregister_task_definition(td.definition.family, td.revision)
        .await?;
    tracing::info!(task_definition = %td.family_revision(), "task definition deregistered");
    Ok(response(state, td))
}

/// ECS's DeleteTaskDefinitions: each revision on its own; those that cannot be deleted are
/// answered in `failures` while the others go.
pub(crate) async fn delete(
    state: &Shared,
    req: DeleteTaskDefinitionsRequest,
) -> Result<DeleteTaskDefinitionsResponse, ApiError> {
    if req.task_definitions.is_empty() {
        return Err(invalid(
            "name at least one task definition to delete, as FAMILY:REVISION or ARN",
        ));
    }
    let mut task_definitions = Vec::new();
    let mut failures = Vec::new();
    let prefix = arn_prefix(state);
    for text in &req.task_definitions {
        // A failure names the revision by its full ARN, as ECS's does, however it was given;
        // only text that names no revision at all is answered as it came.
        let resolved = revision_ref(text)
            .map_err(|e| (text.clone(), e))
            .and_then(|reference| {
                let arn = match &reference {
                    TaskDefRef::Revision { arn: Some(arn), .. } => arn.clone(),
                    _ => format!("{prefix}{reference}"),
                };
                resolve(&state.meta.read(), &reference, false).map_err(|e| (arn, e))
            });
        let deleted = match resolved {
            Ok(td) => state
                .meta
                .delete_task_definition(td.definition.family.clone(), td.revision)
                .await
                .map_err(|e| (td.task_definition_arn, ApiError::from(e))),
            Err(failure) => Err(failure),
        };
        match deleted {
            Ok(mut td) => {
                tracing::info!(task_definition = %td.family_revision(), "task definition deleted");
                td.status = STATUS_DELETE_IN_PROGRESS.to_string();
                task_definitions.push(td.with_printed_times());
            }
            Err((arn, e)) => failures.push(Failure {
                arn,
                reason: e.message,
                detail: Some(format!("{:?}", e.code)),
            }),
        }
    }
    Ok(DeleteTaskDefinitionsResponse {
        task_definitions,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_validation_error_gets_its_own_path_named_line() {
        let def = taskdef::parse(
            r#"{"family":"web","containerDefinitions":[
                {"name":"a","image":"busybox"},
                {"name":"b","image":"busybox","memory":8,"portMappings":[{"containerPort":70000}]}
            ]}"#,
        )
        .unwrap();
        let errors = taskdef::validate(&def).unwrap_err();
        let message = validation_message(&def.family, &errors);
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines[0], "task definition \"web\" is invalid (2 errors):");
        assert!(lines[1..].contains(&"containerDefinitions[0].memory: memory or memoryReservation is required when the task sets no memory"), "{message}");
        assert!(lines[1..].contains(&"containerDefinitions[1].portMappings[0].containerPort: 70000 is out of range 1-65535"), "{message}");
    }

    #[test]
    fn list_status_filters_are_ecs_statuses() {
        assert_eq!(
            status_filter(None, Some(STATUS_ACTIVE)).unwrap(),
            Some("ACTIVE")
        );
        assert_eq!(
            status_filter(Some("INACTIVE"), None).unwrap(),
            Some("INACTIVE")
        );
        assert_eq!(status_filter(None, None).unwrap(), None);
        let e = status_filter(Some("active"), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameter);
        assert!(revision_ref("web")
            .unwrap_err()
            .message
            .contains("web:REVISION"));
        assert_eq!(revision_ref("web:2").unwrap().revision(), Some(("web", 2)));
    }
}
