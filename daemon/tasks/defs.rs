//! Naming a task definition as ECS does — `family` (its latest ACTIVE revision),
//! `family:revision`, or the ARN `arn:aws:ecs:REGION:ACCOUNT:task-definition/family:revision`
//! — parsed where it enters ([`TaskDefRef`]) and resolved against the metadata index
//! ([`resolve_task_definition`]).

use crate::metadata::Index;
use ecrl::api::tasks::{TaskDefinition, STATUS_INACTIVE};
use ecrl::api::{ApiError, ErrorCode};
pub use ecrl::taskdef::TaskDefRef;

/// The task definition `reference` names (see [`TaskDefRef`]): a malformed reference is
/// `InvalidParameter`, one that names nothing stored `TaskDefinitionNotFound`. With
/// `for_run`, an INACTIVE (deregistered) revision is refused, as ECS refuses to run one.
pub fn resolve_task_definition(
    index: &Index,
    reference: &str,
    for_run: bool,
) -> Result<TaskDefinition, ApiError> {
    resolve(index, &TaskDefRef::parse(reference)?, for_run)
}

/// [`resolve_task_definition`] of a parsed reference.
pub fn resolve(
    index: &Index,
    reference: &TaskDefRef,
    for_run: bool,
) -> Result<TaskDefinition, ApiError> {
    let not_found = |message: String| ApiError::new(ErrorCode::TaskDefinitionNotFound, message);
    let family_name = reference.family();
    let Some(family) = index.task_families.get(family_name) else {
        return Err(not_found(format!(
            "task definition family {family_name} does not exist; \
             'ecrl task families' lists the ones that do"
        )));
    };
    let td = match reference {
        TaskDefRef::Family(_) => family.latest_active().ok_or_else(|| {
            let inactive: Vec<String> = family
                .revisions
                .values()
                .map(TaskDefinition::family_revision)
                .collect();
            not_found(if inactive.is_empty() {
                format!(
                    "task definition family {family_name} has no revisions left (all were \
                     deleted); register one with 'ecrl task register -f FILE'"
                )
            } else if for_run {
                format!(
                    "task definition family {family_name} has no ACTIVE revision to run \
                     ({} deregistered); register one with 'ecrl task register -f FILE'",
                    inactive.join(", ")
                )
            } else {
                format!(
                    "task definition family {family_name} has no ACTIVE revision; name a \
                     deregistered one as {family_name}:REVISION ({})",
                    inactive.join(", ")
                )
            })
        })?,
        TaskDefRef::Revision {
            family: name,
            revision,
            arn,
        } => {
            let td = family.revisions.get(revision).ok_or_else(|| {
                not_found(format!(
                    "task definition {name}:{revision} does not exist; \
                     'ecrl task list --family-prefix {name}' shows its revisions"
                ))
            })?;
            if let Some(arn) = arn {
                if *arn != td.task_definition_arn {
                    return Err(not_found(format!(
                        "task definition {arn} does not exist: this registry's ARN for \
                         {name}:{revision} is {}",
                        td.task_definition_arn
                    )));
                }
            }
            td
        }
    };
    if for_run && td.status == STATUS_INACTIVE {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "{} is INACTIVE (deregistered) and cannot be run; run an ACTIVE revision \
                 ('ecrl task list --family-prefix {}')",
                td.family_revision(),
                td.definition.family
            ),
        ));
    }
    Ok(td.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TaskFamily;
    use ecrl::api::tasks::STATUS_ACTIVE;

    const PREFIX: &str = "arn:aws:ecs:local:123456789012:task-definition/";

    fn revision(family: &str, revision: u32, status: &str) -> TaskDefinition {
        TaskDefinition {
            task_definition_arn: format!("{PREFIX}{family}:{revision}"),
            revision,
            status: status.into(),
            registered_at: "2026-01-01T00:00:00Z".into(),
            deregistered_at: None,
            definition: ecrl::taskdef::parse(&format!(
                r#"{{"family":"{family}","containerDefinitions":[{{"name":"a","image":"b","memory":8}}]}}"#
            ))
            .unwrap(),
        }
    }

    /// web: 1 ACTIVE, 2 INACTIVE, 3 ACTIVE, 4 INACTIVE; old: 1 INACTIVE; gone: none left.
    fn index() -> Index {
        let mut index = Index::default();
        let mut family = |name: &str, revs: &[(u32, &str)], last: u32| {
            index.task_families.insert(
                name.into(),
                TaskFamily {
                    last_revision: last,
                    revisions: revs
                        .iter()
                        .map(|&(r, s)| (r, revision(name, r, s)))
                        .collect(),
                },
            );
        };
        family(
            "web",
            &[
                (1, STATUS_ACTIVE),
                (2, STATUS_INACTIVE),
                (3, STATUS_ACTIVE),
                (4, STATUS_INACTIVE),
            ],
            4,
        );
        family("old", &[(1, STATUS_INACTIVE)], 1);
        family("gone", &[], 2);
        index
    }

    fn err(reference: &str, for_run: bool) -> ApiError {
        resolve_task_definition(&index(), reference, for_run).unwrap_err()
    }

    #[test]
    fn references_parse_in_the_three_ecs_forms() {
        assert_eq!(
            TaskDefRef::parse("web").unwrap(),
            TaskDefRef::Family("web".into())
        );
        assert_eq!(
            TaskDefRef::parse("web-2_x:12").unwrap().revision(),
            Some(("web-2_x", 12))
        );
        let arn = format!("{PREFIX}web:3");
        assert_eq!(
            TaskDefRef::parse(&arn).unwrap(),
            TaskDefRef::Revision {
                family: "web".into(),
                revision: 3,
                arn: Some(arn.clone())
            }
        );
        assert_eq!(TaskDefRef::parse(&arn).unwrap().to_string(), arn);
        assert_eq!(TaskDefRef::parse("web:3").unwrap().to_string(), "web:3");
        for bad in [
            "",
            "web:",
            "web:0",
            "web:-1",
            "web:+1",
            "web:x",
            "web:1:2",
            "we b",
            ":3",
            "arn:aws:ecs:local:1:task-definition/web",
            "arn:aws:ecr:local:1:task-definition/web:1",
            "arn:aws:ecs:local:1:task/web:1",
            "arn:aws:ecs:local",
        ] {
            let e = TaskDefRef::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameter, "{bad:?}");
            assert!(e.message.contains("FAMILY:REVISION"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_family_means_its_latest_active_revision() {
        let index = index();
        let td = resolve_task_definition(&index, "web", false).unwrap();
        assert_eq!(td.family_revision(), "web:3", "4 is INACTIVE");
        assert_eq!(
            resolve_task_definition(&index, "web", true)
                .unwrap()
                .revision,
            3
        );
        let e = err("old", false);
        assert_eq!(e.code, ErrorCode::TaskDefinitionNotFound);
        assert!(e.message.contains("no ACTIVE revision"), "{e}");
        assert!(e.message.contains("old:1"), "{e}");
        let e = err("gone", true);
        assert_eq!(e.code, ErrorCode::TaskDefinitionNotFound);
        assert!(e.message.contains("no revisions left"), "{e}");
        let e = err("nope", false);
        assert_eq!(e.code, ErrorCode::TaskDefinitionNotFound);
        assert!(e.message.contains("family nope does not exist"), "{e}");
    }

    #[test]
    fn a_revision_is_found_by_name_or_arn_and_inactive_ones_cannot_run() {
        let index = index();
        assert_eq!(
            resolve_task_definition(&index, "web:2", false)
                .unwrap()
                .status,
            STATUS_INACTIVE
        );
        assert_eq!(
            resolve_task_definition(&index, &format!("{PREFIX}web:1"), true)
                .unwrap()
                .revision,
            1
        );
        let e = err("web:2", true);
        assert_eq!(e.code, ErrorCode::InvalidParameter);
        assert!(
            e.message
                .starts_with("web:2 is INACTIVE (deregistered) and cannot be run"),
            "{e}"
        );
        let e = err("web:9", false);
        assert_eq!(e.code, ErrorCode::TaskDefinitionNotFound);
        assert!(e.message.contains("web:9 does not exist"), "{e}");
        let e = err(
            "arn:aws:ecs:eu-west-1:999999999999:task-definition/web:1",
            false,
        );
        assert_eq!(e.code, ErrorCode::TaskDefinitionNotFound);
        assert!(e.message.contains(&format!("{PREFIX}web:1")), "{e}");
    }
}
