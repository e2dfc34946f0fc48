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

    /// Runs the Python `script` of the venv (boto3) against the daemon, with the endpoint in
    /// `ENDPOINT`, `who`'s key in `KEY_ID` and `SECRET`, and `vars`: its output, whatever
    /// the exit.
    pub fn python(
        &self,
        name: &str,
        script: &str,
        who: &(String, String),
        vars: &[(&str, &str)],
    ) -> Output {
        let file = self.env.path().join(name);
        std::fs::write(&file, script).unwrap();
        let mut command = Command::new(venv().join("bin/python"));
        command
            .arg(&file)
            .env("ENDPOINT", &self.endpoint)
            .env("KEY_ID", &who.0)
            .env("SECRET", &who.1)
            .env("AWS_CONFIG_FILE", self.env.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.env.path().join("aws-credentials"),
            )
            .envs(vars.iter().copied())
            .stdin(Stdio::null());
        command.output().unwrap()
    }

    /// [`Aws::python`], which must succeed: its standard output.
    pub fn python_ok(
        &self,
        name: &str,
        script: &str,
        who: &(String, String),
        vars: &[(&str, &str)],
    ) -> String {
        let out = self.python(name, script, who, vars);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
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

/// What every boto3 script starts with: `client(key, secret, service)` makes a client whose
/// every answer is checked against botocore's model of its operation (members and types);
/// `checked` lists the operations so checked; `error_of(call)` is the AWS error code a call
/// fails with.
pub const BOTO3_PRELUDE: &str = r#"
import json, os, time, urllib.request, urllib.error
import boto3, botocore

endpoint = os.environ["ENDPOINT"]
checked = []

def members_known(value, shape, path):
    # Every member of the raw answer must be one botocore's model of the operation knows,
    # of the type it says.
    if shape is None:
        return
    if shape.type_name == "structure":
        assert isinstance(value, dict), f"{path}: not an object"
        for key, v in value.items():
            assert key in shape.members, f"{path}.{key} is not in botocore's model ({shape.name})"
            members_known(v, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list":
        assert isinstance(value, list), f"{path}: not a list"
        for i, v in enumerate(value):
            members_known(v, shape.member, f"{path}[{i}]")
    elif shape.type_name == "timestamp":
        assert isinstance(value, (int, float)), f"{path}: a timestamp must be epoch seconds"
    elif shape.type_name == "string":
        assert isinstance(value, str), f"{path}: not a string"
    elif shape.type_name in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: not an integer"
    elif shape.type_name == "boolean":
        assert isinstance(value, bool), f"{path}: not a boolean"

def check_shape(http_response, model, **kwargs):
    if http_response.status_code == 200 and http_response.content:
        members_known(json.loads(http_response.content), model.output_shape, model.name)
        checked.append(model.name)

def client(key, secret, service="ecr"):
    c = boto3.client(service, endpoint_url=endpoint, region_name="eu-west-1",
                     aws_access_key_id=key, aws_secret_access_key=secret)
    c.meta.events.register(f"after-call.{service}", check_shape)
    return c

def error_of(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")

"#;
