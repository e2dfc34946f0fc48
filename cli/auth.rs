//! `ecrl auth ...`, `ecrl get-login-password` and `ecrl repo policy ...`: who may use the
//! registry, and how they log in.

use crate::app::{Context, UsageError};
use crate::output::{self, columns, Table};
use clap::{Args, Subcommand};
use ecrl::api::auth::*;
use ecrl::api::Empty;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Registry users and their access keys
    #[command(subcommand)]
    User(UserCommand),
    /// Access keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Identity policies attached to users (IAM JSON or YAML)
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The registry policy (ECR PutRegistryPolicy): applies to every repository
    #[command(subcommand)]
    RegistryPolicy(RegistryPolicyCommand),
    /// Decide whether USER may perform ACTION on RESOURCE, and say which statement decided
    #[command(long_about = SIMULATE_LONG_ABOUT)]
    Simulate {
        /// The user
        user: String,
        /// An action, e.g. ecr:PutImage
        action: String,
        /// A repository name or ARN (arn:aws:ecr:REGION:ACCOUNT:repository/NAME)
        resource: String,
    },
}

const SIMULATE_LONG_ABOUT: &str = "\
Decide, as the registry would, whether USER may perform ACTION on RESOURCE: the user's
identity policies, the repository's policy and the registry policy, evaluated as IAM does
(an explicit Deny wins; otherwise an Allow is needed). Prints the decision and the statement
that made it; exits 0 when allowed and 1 when denied.

Examples:
  ecrl auth simulate ci ecr:PutImage team/app
  ecrl auth simulate ci ecr:BatchGetImage arn:aws:ecr:local:123456789012:repository/team/app";

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and print its access key id and secret (shown this once)
    Create {
        /// 1-64 letters, digits and +=,.@_-
        name: String,
    },
    /// List users, their access key ids and policies
    List,
    /// Delete a user with its keys and policies; its tokens stop working
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Replace a user's access key: prints the new secret; the old key and its tokens stop
    /// working
    Rotate { user: String },
    /// Create an access key of the owner (it may do everything): for the AWS CLI and SDKs,
    /// and `docker login`; prints its secret this once
    Create,
    /// List the owner's access keys (never their secrets)
    List,
    /// Delete an owner access key: it stops working at once
    Delete {
        /// The access key id (AKIA...)
        access_key_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless
    /// --name says otherwise; attaching a name again replaces it
    Attach {
        user: String,
        /// The policy document; - reads stdin
        file: PathBuf,
        /// The policy's name
        #[arg(long)]
        name: Option<String>,
    },
    /// Detach a user's policy by name
    Detach { user: String, name: String },
    /// List a user's policies (with their documents in --output json)
    List { user: String },
}

#[derive(Subcommand, Debug)]
pub enum RegistryPolicyCommand {
    /// Set the registry policy from a file (- reads stdin)
    Set {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the registry policy
    Get,
    /// Remove the registry policy
    Delete,
}

#[derive(Subcommand, Debug)]
pub enum RepoPolicyCommand {
    /// Set a repository's policy (ECR SetRepositoryPolicy) from a file (- reads stdin)
    Set {
        repository: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print a repository's policy
    Get { repository: String },
    /// Remove a repository's policy
    Delete { repository: String },
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// A token for this user instead of the registry's owner
    #[arg(long)]
    pub user: Option<String>,
}

pub const LOGIN_LONG_ABOUT: &str = "\
Print a registry password valid 12 hours, as 'aws ecr get-login-password' does:

  ecrl get-login-password | docker login -u AWS --password-stdin localhost:5000

Without --user the token is the registry owner's (whoever can reach the control socket),
which may do everything; with --user it acts as that user, within the user's policies, and
stops working when the user's access key is rotated or the user is deleted.";

pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        Ok(std::io::read_to_string(std::io::stdin())?)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
    }
}

/// Prints what the daemon warns about a policy just set, one `warning:` line each, on stderr.
fn warn(ctx: &Context, warnings: &[String]) {
    for w in warnings {
        ctx.note(format!("warning: {w}"));
    }
}

/// Prints a value: its table, or JSON / YAML.
fn show<T: Serialize + Table>(ctx: &Context, value: &T) -> anyhow::Result<ExitCode> {
    output::print(ctx.output, value)?;
    Ok(ExitCode::SUCCESS)
}

impl Table for CreateUserResponse {
    fn table(&self) -> String {
        format!(
            "user              {}\naccess key id     {}\nsecret access key {}\n\
             (the secret is shown only now; keep it)\n",
            self.user.user_name, self.access_key.access_key_id, self.access_key.secret_access_key
        )
    }
}

impl Table for RotateKeyResponse {
    fn table(&self) -> String {
        format!(
            "access key id     {}\nsecret access key {}\n(the secret is shown only now; the old key no longer works)\n",
            self.access_key.access_key_id, self.access_key.secret_access_key
        )
    }
}

impl Table for ListOwnerKeysResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .access_key_metadata
            .iter()
            .map(|k| vec![k.access_key_id.clone(), k.create_date.clone()])
            .collect();
        columns(&["ACCESS KEY ID", "CREATED"], &rows)
    }
}

impl Table for ListUsersResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .users
            .iter()
            .map(|u| {
                vec![
                    u.user_name.clone(),
                    u.access_key_ids.join(","),
                    u.attached_policies.join(","),
                    u.create_date.clone(),
                ]
            })
            .collect();
        columns(&["USER", "ACCESS KEYS", "POLICIES", "CREATED"], &rows)
    }
}

impl Table for ListUserPoliciesResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .policies
            .iter()
            .map(|p| vec![p.policy_name.clone(), p.user_name.clone()])
            .collect();
        columns(&["POLICY", "USER"], &rows)
    }
}

impl Table for UserPolicy {
    fn table(&self) -> String {
        format!(
            "policy {} attached to user {}\n",
            self.policy_name, self.user_name
        )
    }
}

impl Table for SimulateResponse {
    fn table(&self) -> String {
        format!("{}\n", self.explanation)
    }
}

impl Table for RepositoryPolicy {
    fn table(&self) -> String {
        let mut text = self.policy_text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

impl Table for RegistryPolicy {
    fn table(&self) -> String {
        let mut text = self.policy_text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

#[derive(Serialize)]
struct Done {}

impl Table for Done {
    fn table(&self) -> String {
        String::new()
    }
}

pub async fn run(ctx: &Context, command: AuthCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        AuthCommand::User(UserCommand::Create { name }) => {
            let r = client
                .call::<CreateUser>(&UserRequest { user_name: name })
                .await?;
            show(ctx, &r)
        }
        AuthCommand::User(UserCommand::List) => {
            let r = client.call::<ListUsers>(&Empty {}).await?;
            show(ctx, &r)
        }
        AuthCommand::User(UserCommand::Delete { name }) => {
            client
                .call::<DeleteUser>(&UserRequest {
                    user_name: name.clone(),
                })
                .await?;
            ctx.note(format!("deleted user {name}"));
            show(ctx, &Done {})
        }
        AuthCommand::Key(KeyCommand::Rotate { user }) => {
            let r = client
                .call::<RotateKey>(&UserRequest { user_name: user })
                .await?;
            show(ctx, &r)
        }
        AuthCommand::Key(KeyCommand::Create) => {
            let r = client.call::<CreateOwnerKey>(&Empty {}).await?;
            show(ctx, &r)
        }
        AuthCommand::Key(KeyCommand::List) => {
            let r = client.call::<ListOwnerKeys>(&Empty {}).await?;
            show(ctx, &r)
        }
        AuthCommand::Key(KeyCommand::Delete { access_key_id }) => {
            client
                .call::<DeleteOwnerKey>(&OwnerKeyRequest {
                    access_key_id: access_key_id.clone(),
                })
                .await?;
            ctx.note(format!("deleted owner access key {access_key_id}"));
            show(ctx, &Done {})
        }
        AuthCommand::Policy(PolicyCommand::Attach { user, file, name }) => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| *s != "-")
                    .map(str::to_string)
                    .ok_or_else(|| UsageError("give the policy a --name".into()))?,
            };
            let document = read_text(&file)?;
            let r = client
                .call::<AttachUserPolicy>(&AttachUserPolicyRequest {
                    user_name: user,
                    policy_name: name,
                    policy_document: document,
                })
                .await?;
            warn(ctx, &r.warnings);
            show(ctx, &r)
        }
        AuthCommand::Policy(PolicyCommand::Detach { user, name }) => {
            client
                .call::<DetachUserPolicy>(&UserPolicyRef {
                    user_name: user.clone(),
                    policy_name: name.clone(),
                })
                .await?;
            // Detaching has no result to print: the confirmation is a note, as for the
            // other removals (and, like attach's, one line).
            ctx.note(format!("policy {name} detached from user {user}"));
            show(ctx, &Done {})
        }
        AuthCommand::Policy(PolicyCommand::List { user }) => {
            let r = client
                .call::<ListUserPolicies>(&UserRequest { user_name: user })
                .await?;
            show(ctx, &r)
        }
        AuthCommand::RegistryPolicy(RegistryPolicyCommand::Set { file }) => {
            let r = client
                .call::<PutRegistryPolicy>(&RegistryPolicyText {
                    policy_text: read_text(&file)?,
                })
                .await?;
            warn(ctx, &r.warnings);
            show(ctx, &r)
        }
        AuthCommand::RegistryPolicy(RegistryPolicyCommand::Get) => {
            let r = client.call::<GetRegistryPolicy>(&Empty {}).await?;
            show(ctx, &r)
        }
        AuthCommand::RegistryPolicy(RegistryPolicyCommand::Delete) => {
            let r = client.call::<DeleteRegistryPolicy>(&Empty {}).await?;
            ctx.note("registry policy removed");
            if ctx.output == output::OutputFormat::Table {
                return Ok(ExitCode::SUCCESS);
            }
            show(ctx, &r)
        }
        AuthCommand::Simulate {
            user,
            action,
            resource,
        } => {
            ecrl::policy::known_action(&action).map_err(crate::app::UsageError)?;
            let r = client
                .call::<SimulatePolicy>(&SimulateRequest {
                    user_name: user,
                    action,
                    resource,
                })
                .await?;
            output::print(ctx.output, &r)?;
            Ok(if r.eval_decision == "allowed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

pub async fn repo_policy(ctx: &Context, command: RepoPolicyCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        RepoPolicyCommand::Set { repository, file } => {
            let r = client
                .call::<SetRepositoryPolicy>(&SetRepositoryPolicyRequest {
                    repository_name: crate::refs::repo_name(&client, &repository)
                        .await?
                        .to_string(),
                    policy_text: read_text(&file)?,
                })
                .await?;
            warn(ctx, &r.warnings);
            show(ctx, &r)
        }
        RepoPolicyCommand::Get { repository } => {
            let r = client
                .call::<GetRepositoryPolicy>(&RepositoryPolicyRef {
                    repository_name: crate::refs::repo_name(&client, &repository)
                        .await?
                        .to_string(),
                })
                .await?;
            show(ctx, &r)
        }
        RepoPolicyCommand::Delete { repository } => {
            let repository = crate::refs::repo_name(&client, &repository).await?;
            let r = client
                .call::<DeleteRepositoryPolicy>(&RepositoryPolicyRef {
                    repository_name: repository.to_string(),
                })
                .await?;
            ctx.note(format!("removed the policy of repository {repository}"));
            if ctx.output == output::OutputFormat::Table {
                return Ok(ExitCode::SUCCESS);
            }
            show(ctx, &r)
        }
    }
}

/// `ecrl get-login-password`: the bare password on stdout.
pub async fn login_password(ctx: &Context, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let r = ctx
        .client()?
        .call::<GetAuthorizationToken>(&TokenRequest {
            user_name: args.user,
        })
        .await?;
    let data = r
        .authorization_data
        .first()
        .ok_or_else(|| anyhow::anyhow!("the daemon answered no token"))?;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&data.authorization_token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("AWS:").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("the daemon answered a malformed token"))?;
    if ctx.output == output::OutputFormat::Table {
        println!("{decoded}");
        Ok(ExitCode::SUCCESS)
    } else {
        output::print(ctx.output, &TokenView(r))?;
        Ok(ExitCode::SUCCESS)
    }
}

struct TokenView(TokenResponse);

impl Serialize for TokenView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Table for TokenView {
    fn table(&self) -> String {
        String::new()
    }
}
