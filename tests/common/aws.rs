//! The AWS CLI v1 and boto3 (from PyPI; tests/run installs them into a venv and names it in
//! `ECRL_TEST_AWS_VENV`) against a daemon that requires credentials.

use super::registry::registry_address;
use super::Env;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The venv with `aws` and `boto3`.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("ECRL_TEST_AWS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "this test needs the AWS CLI v1 and boto3 in a venv named by ECRL_TEST_AWS_VENV \
             (tests/run makes one: python3 -m venv DIR && DIR/bin/pip install awscli boto3)"
            )
        });
    assert!(
        dir.join("bin/aws").exists(),
        "{} has no bin/aws: pip install awscli boto3 into it",
        dir.display()
    );
    dir
}

/// A daemon that requires credentials, and two users: `ci` may do everything in ECR but
/// delete repositories, `reader` only describe them.
pub struct Aws {
    pub env: Env,
    pub _daemon: crate::common::Daemon,
    pub endpoint: String,
    pub address: String,
    pub ci: (String, String),
    pub reader: (String, String),
}

impl Aws {
    pub fn start() -> Aws {
        let env = Env::with_anonymous("none");
        let daemon = env.spawn_daemon(&[]);
        let address = registry_address(&env);
        let user = |name: &str, policy: &str| add_user(&env, name, policy);
        let ci = user(
            "ci",
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "ecr:DeleteRepository", "Resource": "*"}]}"#,
        );
        let reader = user(
            "reader",
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": "*"}]}"#,
        );
        Aws {
            endpoint: format!("http://{address}"),
            address,
            env,
            _daemon: daemon,
            ci,
            reader,
        }
    }

    /// A new user with the identity policy `policy`: its access key id and secret.
    pub fn user(&self, name: &str, policy: &str) -> (String, String) {
        add_user(&self.env, name, policy)
    }

    /// `aws ecr ARGS` as `who` (access key id, secret).
    pub fn aws(&self, who: &(String, String), args: &[&str]) -> Output {
        let mut command = Command::new(venv().join("bin/aws"));
        self.env.apply(&mut command);
        command
            .args(["--endpoint-url", &self.endpoint, "--output", "json"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &who.0)
            .env("AWS_SECRET_ACCESS_KEY", &who.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.env.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.env.path().join("aws-credentials"),
            )
            .stdin(Stdio::null());
        command.output().unwrap()
    }

    pub fn aws_ok(&self, who: &(String, String), args: &[&str]) -> Value {
        let out = self.aws(who, args);
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `aws ARGS`, which must fail with the AWS error `kind`.
    pub fn aws_fails(&self, who: &(String, String), args: &[&str], kind: &str) -> String {
        let out = self.aws(who, args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "aws {args:?} succeeded");
        assert!(
            stderr.contains(&format!("({kind})")),
            "aws {args:?}: expected {kind}: {stderr}"
        );
        stderr
    }
}

/// Creates the user `name` with the identity policy `policy`: its access key id and secret.
fn add_user(env: &Env, name: &str, policy: &str) -> (String, String) {
    let created: Value =
        serde_json::from_str(&env.ecrl_ok(&["auth", "user", "create", name, "--output", "json"]))
            .unwrap();
    let file = env.path().join(format!("{name}.json"));
    std::fs::write(&file, policy).unwrap();
    env.ecrl_ok(&["auth", "policy", "attach", name, file.to_str().unwrap()]);
    (
        created["AccessKey"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string(),
        created["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}
