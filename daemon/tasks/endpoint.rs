//! What a container is told about the task metadata endpoint and its task role's
//! credentials (served by [`crate::task_endpoint`]): the URLs in its environment, each with an
//! id only ecrld can make (an HMAC under a key derived from the token secret), so a container
//! reads its own task's data and nobody else's. The ids are derived, not stored: a restarted
//! ecrld answers the containers it finds again.

use aws_lc_rs::hmac;
use std::net::SocketAddr;

/// The metadata endpoint and credentials provider of this ecrld.
pub struct Endpoint {
    /// `http://ADDR[:PORT]`, as containers reach it.
    base: String,
    /// The port is 80: the SDKs' relative URI (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
    /// always on 169.254.170.2:80) reaches it too.
    on_port_80: bool,
    key: hmac::Key,
    /// The region tasks' AWS SDKs are given.
    region: String,
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` and the rest the SDKs read.
pub const CREDENTIALS_PATH: &str = "/v2/credentials/";

impl Endpoint {
    pub fn new(addr: SocketAddr, token_secret: &[u8; 32], region: &str) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, token_secret),
            b"ecrl task endpoint v1",
        );
        let base = match addr.port() {
            80 => format!("http://{}", addr.ip()),
            port => format!("http://{}:{port}", addr.ip()),
        };
        Endpoint {
            base,
            on_port_80: addr.port() == 80 && addr.ip().to_string() == "169.254.170.2",
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            region: region.to_string(),
        }
    }

    fn mac(&self, what: &str) -> String {
        let tag = hmac::sign(&self.key, what.as_bytes());
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The id in a container's metadata URI: `TASK.CONTAINER.MAC` (ECS names hold neither
    /// dots nor slashes).
    pub fn container_id(&self, task_id: &str, container: &str) -> String {
        let mac = self.mac(&format!("metadata\n{task_id}\n{container}"));
        format!("{task_id}.{container}.{mac}")
    }

    /// The task and container a metadata id names, if ecrld made it.
    pub fn check_container_id<'a>(&self, id: &'a str) -> Option<(&'a str, &'a str)> {
        let mut parts = id.split('.');
        let (Some(task), Some(container), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expected = self.mac(&format!("metadata\n{task}\n{container}"));
        crate::auth::secret::constant_time_eq(expected.as_bytes(), mac.as_bytes())
            .then_some((task, container))
    }

    /// The id in a task's credentials URI: `TASK.MAC`.
    pub fn credentials_id(&self, task_id: &str) -> String {
        let mac = self.mac(&format!("credentials\n{task_id}"));
        format!("{task_id}.{mac}")
    }

    pub fn check_credentials_id<'a>(&self, id: &'a str) -> Option<&'a str> {
        let (task, mac) = id.split_once('.')?;
        let expected = self.mac(&format!("credentials\n{task}"));
        crate::auth::secret::constant_time_eq(expected.as_bytes(), mac.as_bytes()).then_some(task)
    }

    /// The variables a container of the task gets (ECS's names), `role` when the task has a
    /// task role. The caller leaves out any the definition sets itself.
    pub fn env(&self, task_id: &str, container: &str, role: bool) -> Vec<(String, String)> {
        let id = self.container_id(task_id, container);
        let mut env = vec![
            (
                "ECS_CONTAINER_METADATA_URI_V4".to_string(),
                format!("{}/v4/{id}", self.base),
            ),
            (
                "ECS_CONTAINER_METADATA_URI".to_string(),
                format!("{}/v3/{id}", self.base),
            ),
        ];
        if role {
            let path = format!("{CREDENTIALS_PATH}{}", self.credentials_id(task_id));
            if self.on_port_80 {
                env.push((
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".to_string(),
                    path.clone(),
                ));
            }
            env.push((
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
                format!("{}{path}", self.base),
            ));
            // The AWS API of ecrl, for ECR and ECS calls: the same endpoint serves it.
            env.push(("AWS_ENDPOINT_URL_ECR".to_string(), self.base.clone()));
            env.push(("AWS_ENDPOINT_URL_ECS".to_string(), self.base.clone()));
            env.push(("AWS_DEFAULT_REGION".to_string(), self.region.clone()));
            env.push(("AWS_REGION".to_string(), self.region.clone()));
        }
        env
    }
}

/// The user a task role names: `arn:aws:iam::ACCOUNT:role/[PATH/]NAME` → NAME; a bare name
/// is taken as it is.
pub fn role_user(role: &str) -> Option<&str> {
    let role = role.trim();
    if role.is_empty() {
        return None;
    }
    match role.strip_prefix("arn:") {
        Some(rest) => {
            let resource = rest.splitn(5, ':').nth(4)?;
            let path = resource.strip_prefix("role/")?;
            path.rsplit('/').next().filter(|n| !n.is_empty())
        }
        None => Some(role),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(addr: &str) -> Endpoint {
        Endpoint::new(addr.parse().unwrap(), &[9u8; 32], "eu-west-1")
    }

    #[test]
    fn ids_are_only_taken_as_made() {
        let e = endpoint("169.254.170.2:80");
        let id = e.container_id("abc123", "web");
        assert_eq!(e.check_container_id(&id), Some(("abc123", "web")));
        assert_eq!(e.check_container_id(&id.replace("web", "db")), None);
        assert_eq!(e.check_container_id(&id.replace("abc123", "abc124")), None);
        assert_eq!(e.check_container_id("abc123.web"), None);
        assert_eq!(e.check_container_id(&format!("{id}.x")), None);
        let other = Endpoint::new("169.254.170.2:80".parse().unwrap(), &[8u8; 32], "r");
        assert_eq!(other.check_container_id(&id), None);
        let cred = e.credentials_id("abc123");
        assert_eq!(e.check_credentials_id(&cred), Some("abc123"));
        assert_eq!(
            e.check_credentials_id(&cred.replace("abc123", "abc12")),
            None
        );
        // A metadata id is not a credentials id.
        assert_eq!(e.check_credentials_id(&id), None);
    }

    #[test]
    fn containers_get_ecs_variables() {
        let e = endpoint("169.254.170.2:80");
        let env = e.env("t1", "web", true);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("ECS_CONTAINER_METADATA_URI_V4").unwrap(),
            format!("http://169.254.170.2/v4/{}", e.container_id("t1", "web"))
        );
        assert!(get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .unwrap()
            .starts_with("/v2/credentials/t1."));
        assert_eq!(get("AWS_REGION").unwrap(), "eu-west-1");
        let e = endpoint("169.254.170.2:41000");
        let env = e.env("t1", "web", false);
        assert_eq!(env.len(), 2);
        assert!(env[0]
            .1
            .starts_with("http://169.254.170.2:41000/v4/t1.web."));
        let env = e.env("t1", "web", true);
        assert!(!env
            .iter()
            .any(|(k, _)| k == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"));
    }

    #[test]
    fn roles_name_users() {
        assert_eq!(role_user("arn:aws:iam::123456789012:role/ci"), Some("ci"));
        assert_eq!(
            role_user("arn:aws:iam::1:role/team/app/ci-bot"),
            Some("ci-bot")
        );
        assert_eq!(role_user("ci"), Some("ci"));
        assert_eq!(role_user("arn:aws:iam::1:user/ci"), None);
        assert_eq!(role_user("arn:aws:iam::1:role/"), None);
        assert_eq!(role_user(""), None);
    }
}
