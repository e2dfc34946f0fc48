//! `ecrl secret put|get|list|delete`: the secret store task definitions' `secrets` read from.

use crate::app::{Context, UsageError};
use crate::output::{self, columns, key_values, Table};
use clap::Subcommand;
use ecrl::api::secrets::*;
use ecrl::api::Empty;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

pub const LONG_ABOUT: &str = "\
Keep secrets for tasks: database passwords, API keys, ... stored sealed by ecrld (with the
storage key when blobs are encrypted) and given to containers as environment variables by
their task definitions' 'secrets', as on ECS:

  \"secrets\": [
    {\"name\": \"DB_PASSWORD\", \"valueFrom\": \"arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db:password::\"},
    {\"name\": \"API_KEY\", \"valueFrom\": \"arn:aws:ssm:us-east-1:123456789012:parameter/prod/api-key\"}
  ]

valueFrom takes a Secrets Manager ARN (with ECS's :json-key:version-stage:version-id suffix
for one key of a JSON secret; AWSCURRENT and AWSPREVIOUS are kept), an SSM parameter ARN, or
a parameter's name. A secret is found by its name: the ARN's region and account are not
checked, and the six random characters AWS appends to a secret's ARN may be left on. A task
whose secret is missing stops with ECS's ResourceInitializationError naming it.

Values are never shown by 'ecrl task describe', 'ecrl secret list' or ecrld's log; only
'ecrl secret get' prints one.

Examples:
  printf %s \"$DB_PASSWORD\" | ecrl secret put prod/db --value-stdin
  ecrl secret put prod/api-key --file api-key.txt
  ecrl secret list
  ecrl secret get prod/db --output json | jq -r .SecretString";

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret's value (a new version: the one before stays as AWSPREVIOUS)
    Put {
        /// 1-512 letters, digits and /_+=.@- (e.g. prod/db)
        name: String,
        /// Read the value from standard input (without a trailing newline)
        #[arg(long, conflicts_with = "file")]
        value_stdin: bool,
        /// Read the value from a file (as it is)
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Print a secret's value
    Get { name: String },
    /// List the secrets' names and versions (never their values)
    List,
    /// Delete a secret
    Delete { name: String },
}

/// The value to store: from a file, standard input, or asked for on the terminal.
fn read_value(value_stdin: bool, file: Option<PathBuf>) -> anyhow::Result<String> {
    let bytes = if let Some(path) = file {
        std::fs::read(&path).map_err(|e| UsageError(format!("--file {}: {e}", path.display())))?
    } else if value_stdin {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        bytes
    } else if std::io::stdin().is_terminal() {
        crate::mirror::prompt("Value", false)?.into_bytes()
    } else {
        return Err(UsageError(
            "give the value with --value-stdin or --file PATH (there is no terminal to ask on)"
                .into(),
        )
        .into());
    };
    String::from_utf8(bytes)
        .map_err(|_| UsageError("a secret's value must be UTF-8 text".into()).into())
}

pub async fn run(ctx: &Context, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        SecretCommand::Put {
            name,
            value_stdin,
            file,
        } => {
            let value = zeroize::Zeroizing::new(read_value(value_stdin, file)?);
            let r = client
                .call::<PutSecret>(&PutSecretRequest {
                    name,
                    value: value.to_string(),
                })
                .await?;
            ctx.note(format!(
                "{} {}",
                if r.created { "created" } else { "updated" },
                r.secret.name
            ));
            output::print(ctx.output, &r.secret)?;
        }
        SecretCommand::Get { name } => {
            let r = client.call::<GetSecret>(&NamedSecret { name }).await?;
            output::print(ctx.output, &Value(r))?;
        }
        SecretCommand::List => {
            let r = client.call::<ListSecrets>(&Empty {}).await?;
            output::print(ctx.output, &r)?;
        }
        SecretCommand::Delete { name } => {
            let r = client.call::<DeleteSecret>(&NamedSecret { name }).await?;
            ctx.note(format!("deleted {}", r.name));
            output::print(ctx.output, &r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Table for SecretInfo {
    fn table(&self) -> String {
        key_values(&[
            ("name", self.name.clone()),
            ("arn", self.arn.clone()),
            ("version", self.version_id.clone()),
            ("created", self.created_date.clone()),
            ("changed", self.last_changed_date.clone()),
        ])
    }
}

impl Table for ListSecretsResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .secret_list
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.version_id.clone(),
                    s.last_changed_date.clone(),
                ]
            })
            .collect();
        columns(&["NAME", "VERSION", "CHANGED"], &rows)
    }
}

/// A secret's value: the value alone (with a newline) as a table, so `$(ecrl secret get X)`
/// is the value; everything in JSON / YAML.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Value(SecretValue);

impl Table for Value {
    fn table(&self) -> String {
        format!("{}\n", self.0.secret_string)
    }
}
