//! The task metadata endpoint (ECS's v4 and v3) and the credentials provider of task roles,
//! on a listener of its own that containers reach: by default 169.254.170.2:80, the address
//! ECS uses, which ecrld puts on the loopback interface (containers on bridge networks reach
//! it through their gateway, host-network ones directly).
//!
//! - `GET /v4/ID`, `/v4/ID/task`, `/v4/ID/stats`, `/v4/ID/task/stats` (and `/v3/...`): the
//!   container's and its task's metadata in ECS's shapes, and the engine's statistics. `ID`
//!   is the one in the container's `ECS_CONTAINER_METADATA_URI_V4`: it names one container of
//!   one task and only ecrld can make it ([`crate::tasks::endpoint`]), so a container reads
//!   its own task and nothing else.
//! - `GET /v2/credentials/ID`: short-lived credentials of the ecrl user the task role names,
//!   in the shape the AWS SDKs read; only while the task runs.
//! - `POST /`: ecrl's AWS API (ECR and ECS), signed as anywhere else, so a task's SDK calls
//!   reach ecrld with its role's credentials.
//!
//! Every answer is small; connections are capped (in all and per address) with the
//! registry's deadlines.

use crate::app::AppState;
use crate::tasks::endpoint::{role_user, CREDENTIALS_PATH};
use crate::tasks::spec::{LABEL_ROLE, LABEL_TASK_ID, ROLE_PAUSE};
use crate::tasks::TaskPlan;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ecrl::api::tasks::{Container, Task};
use serde_json::{json, Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Connections at once: in all, and from one address (containers on the host network all
/// come from the host's).
const MAX_CONNECTIONS: usize = 512;
const MAX_PER_CLIENT: usize = 64;

/// Where the endpoint's port is remembered when it is chosen by the system (port 0): a
/// restarted ecrld takes the same one again, so the URLs its running containers were given
/// still lead to it.
const PORT_FILE: &str = "task-endpoint.port";

/// Binds the endpoint at `addr` (`IP:PORT`). An address the host does not have yet (the
/// link-local 169.254.170.2 at first) is added to the loopback interface, as the ECS agent
/// routes it, when ecrld may (root). `Err` says why there is no endpoint.
pub async fn bind(
    addr: &str,
    data_dir: &std::path::Path,
) -> Result<tokio::net::TcpListener, String> {
    let wanted: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not IP:PORT"))?;
    let remembered = data_dir.join(PORT_FILE);
    let mut tries = vec![wanted];
    if wanted.port() == 0 {
        if let Some(port) = std::fs::read_to_string(&remembered)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            tries.insert(0, SocketAddr::new(wanted.ip(), port));
        }
    }
    let mut added = false;
    let mut last = String::new();
    let mut i = 0;
    while i < tries.len() {
        match crate::registry::conn::bind(&tries[i].to_string()).await {
            Ok(listener) => {
                if wanted.port() == 0 {
                    if let Ok(local) = listener.local_addr() {
                        let _ = std::fs::write(&remembered, local.port().to_string());
                    }
                }
                return Ok(listener);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && !added => {
                added = true;
                add_address(wanted.ip()).await?;
                continue;
            }
            Err(e) => last = format!("cannot listen on {}: {e}", tries[i]),
        }
        i += 1;
    }
    Err(last)
}

/// Puts `ip` on the loopback interface (`ip addr add IP/32 dev lo`).
async fn add_address(ip: IpAddr) -> Result<(), String> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let output = tokio::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/{prefix}"), "dev", "lo"])
        .output()
        .await
        .map_err(|e| {
            format!("the host has no address {ip}, and `ip` cannot be run to add it: {e}")
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("File exists") {
        tracing::info!(address = %ip, "added the task metadata endpoint's address to the loopback interface");
        Ok(())
    } else {
        Err(format!(
            "the host has no address {ip}, and adding it to the loopback interface failed \
             ({}); run ecrld as root, or set tasks.endpoint to an address the host has",
            stderr.trim()
        ))
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.config.connections.clone();
    let handler: crate::registry::conn::Handler = Arc::new(move |request| {
        let state = state.clone();
        Box::pin(async move { answer(state, request).await })
    });
    crate::registry::conn::serve_side(
        listener,
        &limits,
        MAX_CONNECTIONS,
        MAX_PER_CLIENT,
        handler,
        shutdown,
    )
    .await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

const NOT_FOUND: &str = "no such task metadata or credentials: use the URLs in the container's \
                         ECS_CONTAINER_METADATA_URI_V4 and AWS_CONTAINER_CREDENTIALS_FULL_URI";

async fn answer(state: Arc<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    if crate::aws::is_aws(&parts) {
        let mut body = crate::registry::RequestBody::new(body);
        return crate::registry::aws_answer(state, &parts, &mut body).await;
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET (and POST / for the AWS API)",
        );
    }
    let Some(endpoint) = state.tasks.ctx().endpoint.clone() else {
        return error(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let path = parts.uri.path();
    if let Some(id) = path.strip_prefix(CREDENTIALS_PATH) {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        return match endpoint.check_credentials_id(id) {
            Some(task) => credentials(&state, task, authorization, id).await,
            None => error(StatusCode::NOT_FOUND, NOT_FOUND),
        };
    }
    let rest = match path
        .strip_prefix("/v4/")
        .or_else(|| path.strip_prefix("/v3/"))
    {
        Some(rest) => rest,
        None => return error(StatusCode::NOT_FOUND, NOT_FOUND),
    };
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let Some((task_id, container)) = endpoint.check_container_id(id) else {
        return error(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let Some(task) = state.tasks.get(task_id) else {
        return error(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let v4 = path.starts_with("/v4/");
    match what.trim_end_matches('/') {
        "" => match task.containers.iter().find(|c| c.name == container) {
            Some(c) => {
                let plan = state.tasks.plan(task_id).await;
                let networks = networks(&state, &task).await;
                let doc = container_doc(&state, &task, plan.as_ref(), c, &networks, v4).await;
                json_response(StatusCode::OK, &doc)
            }
            None => error(StatusCode::NOT_FOUND, NOT_FOUND),
        },
        "task" => {
            let plan = state.tasks.plan(task_id).await;
            json_response(
                StatusCode::OK,
                &task_doc(&state, &task, plan.as_ref(), v4).await,
            )
        }
        "stats" => match task
            .containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.runtime_id.clone())
        {
            Some(id) => match state.runtime.container_stats(&id).await {
                Ok(stats) => json_response(StatusCode::OK, &stats),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            },
            None => json_response(StatusCode::OK, &json!({})),
        },
        "task/stats" => {
            let mut all = Map::new();
            for c in &task.containers {
                if let Some(id) = &c.runtime_id {
                    let stats = state
                        .runtime
                        .container_stats(id)
                        .await
                        .unwrap_or(Value::Null);
                    all.insert(id.clone(), stats);
                }
            }
            json_response(StatusCode::OK, &Value::Object(all))
        }
        _ => error(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

/// The task role's user's credentials, while the task runs.
async fn credentials(
    state: &Arc<AppState>,
    task_id: &str,
    authorization: Option<&str>,
    id: &str,
) -> Response {
    // The SDKs send AWS_CONTAINER_AUTHORIZATION_TOKEN when it is set; ecrld sets none (the
    // id in the path is the secret), but one that is sent must be the id's.
    if authorization.is_some_and(|a| a != id) {
        return error(
            StatusCode::FORBIDDEN,
            "the authorization token is not this task's",
        );
    }
    let Some(task) = state.tasks.get(task_id) else {
        return error(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    if task.is_stopped() {
        return error(
            StatusCode::NOT_FOUND,
            "the task has stopped: its role's credentials are gone",
        );
    }
    let plan = state.tasks.plan(task_id).await;
    let role = plan.as_ref().and_then(|p| {
        p.overrides
            .task_role_arn
            .clone()
            .or_else(|| p.definition.definition.task_role_arn.clone())
            .filter(|r| !r.trim().is_empty())
    });
    let Some(role) = role else {
        return error(StatusCode::NOT_FOUND, "the task has no task role");
    };
    let Some(user) = role_user(&role).map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the task role {role:?} is not arn:aws:iam::ACCOUNT:role/NAME"),
        );
    };
    if !state.meta.read().auth.users.contains_key(&user) {
        tracing::warn!(task = task_id, role = %role, "a task asked for the credentials of its role, whose user {user} does not exist");
        return error(
            StatusCode::NOT_FOUND,
            format!("the task role {role} names the ecrl user {user:?}, which does not exist (ecrl auth user create {user})"),
        );
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let minted = match crate::aws::session::mint(state.meta.token_secret(), &user, now) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let expiration = time::OffsetDateTime::from_unix_timestamp(minted.expires)
        .map(ecrl::timestamp::format)
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({
            "AccessKeyId": minted.access_key_id,
            "SecretAccessKey": minted.secret_access_key,
            "Token": minted.session_token,
            "Expiration": expiration,
            "RoleArn": role,
        }),
    )
}

/// The task's network addresses: the pause container's (awsvpc) or each container's own.
async fn networks(state: &Arc<AppState>, task: &Task) -> NetworkInfo {
    let mut info = NetworkInfo::default();
    if task.network_mode == "awsvpc" {
        if let Ok(found) = state
            .runtime
            .list_containers(LABEL_TASK_ID, task.id())
            .await
        {
            if let Some(pause) = found
                .iter()
                .find(|c| c.labels.get(LABEL_ROLE).map(String::as_str) == Some(ROLE_PAUSE))
            {
                if let Ok(status) = state.runtime.inspect_container(&pause.id).await {
                    info.shared = status.networks;
                }
            }
        }
    }
    info
}

#[derive(Default)]
struct NetworkInfo {
    /// awsvpc: the addresses every container of the task shares.
    shared: Vec<crate::runtime::NetworkAddress>,
}

fn limits(cpu: Option<&str>, memory: Option<&str>) -> Value {
    let mut limits = Map::new();
    if let Some(cpu) = cpu.and_then(|c| c.parse::<f64>().ok()) {
        limits.insert("CPU".into(), json!(cpu));
    }
    if let Some(memory) = memory.and_then(|m| m.parse::<u64>().ok()) {
        limits.insert("Memory".into(), json!(memory));
    }
    Value::Object(limits)
}

/// ECS's container metadata (the v4 shape; v3 has no `Networks` details beyond the mode and
/// addresses).
async fn container_doc(
    state: &Arc<AppState>,
    task: &Task,
    plan: Option<&TaskPlan>,
    c: &Container,
    networks: &NetworkInfo,
    v4: bool,
) -> Value {
    let (family, revision) = family_revision(task);
    let status = match &c.runtime_id {
        Some(id) => state.runtime.inspect_container(id).await.ok(),
        None => None,
    };
    let def = plan.and_then(|p| {
        p.definition
            .definition
            .container_definitions
            .iter()
            .find(|d| d.name == c.name)
    });
    let mut doc = Map::new();
    if let Some(id) = &c.runtime_id {
        doc.insert("DockerId".into(), json!(id));
    }
    doc.insert("Name".into(), json!(c.name));
    if plan.is_some() {
        let names = crate::tasks::spec::Names {
            task_id: task.id().to_string(),
            family: family.clone(),
            revision: revision.parse().unwrap_or_default(),
        };
        doc.insert("DockerName".into(), json!(names.container(&c.name)));
    }
    doc.insert("Image".into(), json!(c.image));
    if let Some(status) = &status {
        doc.insert("ImageID".into(), json!(status.image_id));
    }
    doc.insert(
        "Labels".into(),
        json!({
            "com.amazonaws.ecs.cluster": task.cluster_arn,
            "com.amazonaws.ecs.container-name": c.name,
            "com.amazonaws.ecs.task-arn": task.task_arn,
            "com.amazonaws.ecs.task-definition-family": family,
            "com.amazonaws.ecs.task-definition-version": revision,
        }),
    );
    doc.insert("DesiredStatus".into(), json!(task.desired_status));
    doc.insert("KnownStatus".into(), json!(c.last_status));
    doc.insert(
        "Limits".into(),
        limits(
            Some(c.cpu.as_deref().unwrap_or("0")),
            c.memory.as_deref().or(c.memory_reservation.as_deref()),
        ),
    );
    if let Some(status) = &status {
        for (key, at) in [
            ("CreatedAt", &status.created_at),
            ("StartedAt", &status.started_at),
            ("FinishedAt", &status.finished_at),
        ] {
            if let Some(at) = at {
                doc.insert(key.into(), json!(at));
            }
        }
    }
    doc.insert("Type".into(), json!("NORMAL"));
    doc.insert("ContainerARN".into(), json!(c.container_arn));
    if let Some(code) = c.exit_code {
        doc.insert("ExitCode".into(), json!(code));
    }
    if def.is_some_and(|d| d.health_check.is_some()) {
        doc.insert("Health".into(), json!({ "status": c.health_status }));
    }
    if let Some(log) = def.and_then(|d| d.log_configuration.as_ref()) {
        if let Some(driver) = log.get("logDriver") {
            doc.insert("LogDriver".into(), driver.clone());
        }
        if let Some(options) = log.get("options") {
            doc.insert("LogOptions".into(), options.clone());
        }
    }
    let addresses = if networks.shared.is_empty() {
        status
            .as_ref()
            .map(|s| s.networks.clone())
            .unwrap_or_default()
    } else {
        networks.shared.clone()
    };
    let mode = task.network_mode.clone();
    let nets: Vec<Value> = addresses
        .iter()
        .map(|n| {
            let mut net = Map::new();
            net.insert("NetworkMode".into(), json!(mode));
            let ips: Vec<&str> = [n.ipv4.as_str()]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect();
            net.insert("IPv4Addresses".into(), json!(ips));
            if v4 {
                if let (Some(len), false) = (n.prefix_len, n.ipv4.is_empty()) {
                    if let Some(block) = subnet(&n.ipv4, len) {
                        net.insert("IPv4SubnetCIDRBlock".into(), json!(block));
                    }
                }
                if let Some(mac) = &n.mac {
                    net.insert("MACAddress".into(), json!(mac));
                }
                if let Some(gateway) = &n.gateway {
                    net.insert("IPv4Gateway".into(), json!(gateway));
                }
                net.insert("EcrlNetwork".into(), json!(n.network));
            }
            Value::Object(net)
        })
        .collect();
    if !nets.is_empty() || mode == "host" {
        let nets = if nets.is_empty() {
            vec![json!({"NetworkMode": "host", "IPv4Addresses": []})]
        } else {
            nets
        };
        doc.insert("Networks".into(), Value::Array(nets));
    }
    if v4 && !c.network_bindings.is_empty() {
        let ports: Vec<Value> = c
            .network_bindings
            .iter()
            .map(|b| {
                json!({
                    "ContainerPort": b.container_port,
                    "Protocol": b.protocol,
                    "HostPort": b.host_port,
                    "HostIp": b.bind_ip,
                })
            })
            .collect();
        doc.insert("Ports".into(), Value::Array(ports));
    }
    Value::Object(doc)
}

/// `10.0.2.106` with prefix 24 → `10.0.2.0/24`.
fn subnet(ip: &str, len: i64) -> Option<String> {
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len = u32::try_from(len).ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(format!(
        "{}/{len}",
        std::net::Ipv4Addr::from(u32::from(ip) & mask)
    ))
}

fn family_revision(task: &Task) -> (String, String) {
    let name = task
        .task_definition_arn
        .rsplit('/')
        .next()
        .unwrap_or_default();
    match name.rsplit_once(':') {
        Some((family, revision)) => (family.to_string(), revision.to_string()),
        None => (name.to_string(), String::new()),
    }
}

/// ECS's task metadata, with every container's.
async fn task_doc(state: &Arc<AppState>, task: &Task, plan: Option<&TaskPlan>, v4: bool) -> Value {
    let (family, revision) = family_revision(task);
    let networks = networks(state, task).await;
    let mut containers = Vec::new();
    for c in &task.containers {
        containers.push(container_doc(state, task, plan, c, &networks, v4).await);
    }
    let mut doc = Map::new();
    doc.insert("Cluster".into(), json!(task.cluster_arn));
    doc.insert("TaskARN".into(), json!(task.task_arn));
    doc.insert("Family".into(), json!(family));
    doc.insert("Revision".into(), json!(revision));
    doc.insert("DesiredStatus".into(), json!(task.desired_status));
    doc.insert("KnownStatus".into(), json!(task.last_status));
    let cpu_vcpu = task
        .cpu
        .as_deref()
        .and_then(|c| c.parse::<f64>().ok())
        .map(|units| (units / 1024.0).to_string());
    let limits = limits(cpu_vcpu.as_deref(), task.memory.as_deref());
    if limits.as_object().is_some_and(|l| !l.is_empty()) {
        doc.insert("Limits".into(), limits);
    }
    for (key, at) in [
        ("PullStartedAt", &task.pull_started_at),
        ("PullStoppedAt", &task.pull_stopped_at),
        ("ExecutionStoppedAt", &task.stopped_at),
    ] {
        if let Some(at) = at {
            doc.insert(key.into(), json!(at));
        }
    }
    doc.insert("AvailabilityZone".into(), json!("local"));
    doc.insert("LaunchType".into(), json!("EC2"));
    if let Some(service) = task.group.strip_prefix("service:") {
        doc.insert("ServiceName".into(), json!(service));
    }
    doc.insert("Containers".into(), Value::Array(containers));
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_worked_out_from_address_and_prefix() {
        assert_eq!(subnet("10.0.2.106", 24).as_deref(), Some("10.0.2.0/24"));
        assert_eq!(subnet("172.17.0.2", 16).as_deref(), Some("172.17.0.0/16"));
        assert_eq!(subnet("172.17.0.2", 33), None);
        assert_eq!(subnet("nope", 16), None);
    }
}
