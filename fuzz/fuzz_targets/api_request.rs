//! Control-API requests as the daemon decodes them (query string for GET, JSON body
//! otherwise, query string for the streaming endpoints), then the library parsers the
//! handlers hand their fields to. A decoded request encodes and decodes back to the same.
#![no_main]

use ecrl::api::{self, auth, repos, system, tasks, transfer, Endpoint, Method};
use ecrl::names::{Reference, RepoName};
use ecrl::policy::{Policy, PolicyKind};
use ecrl::taskdef::{self, TaskDefRef};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

/// The request re-encoded the way the client sends it, then decoded again, is the same.
fn reencodes<E: Endpoint>(request: &E::Request) {
    let value = serde_json::to_value(request).expect("a request serializes");
    let again: E::Request = match E::METHOD {
        Method::Get => {
            let query = serde_urlencoded::to_string(request).expect("a GET request encodes");
            api::decode_request::<E>(Some(&query), b"").expect("a re-encoded request decodes")
        }
        Method::Post | Method::Delete => {
            let body = serde_json::to_vec(request).expect("a request encodes");
            api::decode_request::<E>(None, &body).expect("a re-encoded request decodes")
        }
    };
    assert_eq!(serde_json::to_value(&again).expect("serializes"), value);
}

fn decode<E: Endpoint>(data: &[u8]) -> Option<E::Request> {
    let query = std::str::from_utf8(data).ok();
    let request = api::decode_request::<E>(query, data).ok()?;
    reencodes::<E>(&request);
    Some(request)
}

fn decode_query<R: Serialize + DeserializeOwned>(data: &[u8]) -> Option<R> {
    let query = std::str::from_utf8(data).ok()?;
    let request: R = serde_urlencoded::from_str(query).ok()?;
    let value = serde_json::to_value(&request).expect("a request serializes");
    let encoded = serde_urlencoded::to_string(&request).expect("a request encodes");
    let again: R = serde_urlencoded::from_str(&encoded).expect("a re-encoded request decodes");
    assert_eq!(serde_json::to_value(&again).expect("serializes"), value);
    Some(request)
}

fn repo(name: &str) {
    if let Ok(r) = name.parse::<RepoName>() {
        assert_eq!(r.as_str(), name);
    }
}

fn policy(text: &str, kind: PolicyKind) {
    if let Ok(p) = Policy::parse(text, kind) {
        let _ = p.warnings();
    }
}

fuzz_target!(|input: (u8, &[u8])| {
    let (pick, data) = input;
    match pick % 40 {
        0 => drop(decode::<auth::CreateUser>(data)),
        1 => drop(decode::<auth::ListUsers>(data)),
        2 => drop(decode::<auth::DeleteUser>(data)),
        3 => drop(decode::<auth::RotateKey>(data)),
        4 => drop(decode::<auth::GetAuthorizationToken>(data)),
        5 => {
            if let Some(r) = decode::<auth::AttachUserPolicy>(data) {
                policy(&r.policy_document, PolicyKind::Identity);
            }
        }
        6 => drop(decode::<auth::DetachUserPolicy>(data)),
        7 => drop(decode::<auth::ListUserPolicies>(data)),
        8 => drop(decode::<auth::SimulatePolicy>(data)),
        9 => {
            if let Some(r) = decode::<auth::SetRepositoryPolicy>(data) {
                repo(&r.repository_name);
                policy(&r.policy_text, PolicyKind::Repository);
            }
        }
        10 => {
            if let Some(r) = decode::<auth::GetRepositoryPolicy>(data) {
                repo(&r.repository_name);
            }
        }
        11 => drop(decode::<auth::DeleteRepositoryPolicy>(data)),
        12 => {
            if let Some(r) = decode::<auth::PutRegistryPolicy>(data) {
                policy(&r.policy_text, PolicyKind::Registry);
            }
        }
        13 => drop(decode::<auth::GetRegistryPolicy>(data)),
        14 => drop(decode::<auth::DeleteRegistryPolicy>(data)),
        15 => {
            if let Some(r) = decode::<repos::CreateRepository>(data) {
                repo(&r.repository_name);
            }
        }
        16 => drop(decode::<repos::ListRepositories>(data)),
        17 => {
            if let Some(r) = decode::<repos::DescribeRepository>(data) {
                repo(&r.repository_name);
            }
        }
        18 => drop(decode::<repos::DeleteRepository>(data)),
        19 => drop(decode::<repos::ListImages>(data)),
        20 => drop(decode::<repos::DescribeImages>(data)),
        21 => drop(decode::<repos::BatchDeleteImage>(data)),
        22 => drop(decode::<repos::TagImage>(data)),
        23 => drop(decode::<system::Info>(data)),
        24 => drop(decode::<system::Shutdown>(data)),
        25 => {
            if let Some(def) = decode::<tasks::RegisterTaskDefinition>(data) {
                let _ = taskdef::validate(&def);
            }
        }
        26 => {
            if let Some(r) = decode::<tasks::DescribeTaskDefinition>(data) {
                let _ = TaskDefRef::parse(&r.task_definition);
            }
        }
        27 => drop(decode::<tasks::DeregisterTaskDefinition>(data)),
        28 => drop(decode::<tasks::ListTaskDefinitions>(data)),
        29 => drop(decode::<tasks::ListTaskDefinitionFamilies>(data)),
        30 => drop(decode::<tasks::DeleteTaskDefinitions>(data)),
        31 => {
            if let Some(r) = decode::<tasks::RunTask>(data) {
                let _ = TaskDefRef::parse(&r.task_definition);
            }
        }
        32 => drop(decode::<tasks::ListTasks>(data)),
        33 => drop(decode::<tasks::DescribeTask>(data)),
        34 => drop(decode::<tasks::StopTask>(data)),
        35 => drop(decode_query::<tasks::WatchTaskRequest>(data)),
        36 => drop(decode_query::<tasks::TaskLogsRequest>(data)),
        37 => {
            if let Some(r) = decode_query::<transfer::PushRequest>(data) {
                repo(&r.repository_name);
            }
        }
        38 => {
            if let Some(r) = decode_query::<transfer::PullRequest>(data) {
                repo(&r.repository_name);
                if let Some(reference) = &r.reference {
                    let _ = reference.parse::<Reference>();
                }
            }
        }
        _ => drop(decode_query::<repos::ListImagesRequest>(data)),
    }
});
