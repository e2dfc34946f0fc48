
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'ecrl' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'ecrl'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'ecrl' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('daemon', 'daemon', [CompletionResultType]::ParameterValue, 'Start, stop and inspect the ecrld daemon')
            [CompletionResult]::new('repo', 'repo', [CompletionResultType]::ParameterValue, 'Create, list, describe and delete repositories')
            [CompletionResult]::new('image', 'image', [CompletionResultType]::ParameterValue, 'List, describe, delete and tag images')
            [CompletionResult]::new('task', 'task', [CompletionResultType]::ParameterValue, 'Register, describe, list, deregister and delete ECS task definitions')
            [CompletionResult]::new('service', 'service', [CompletionResultType]::ParameterValue, 'ECS services: a task definition kept running N times, rolled out revision by revision')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print containers'' output by awslogs log group and stream (-f follows)')
            [CompletionResult]::new('secret', 'secret', [CompletionResultType]::ParameterValue, 'Keep secrets (passwords, keys) that tasks'' `secrets` put in their environment')
            [CompletionResult]::new('cluster', 'cluster', [CompletionResultType]::ParameterValue, 'Create, list, describe and delete ECS clusters (groups of tasks)')
            [CompletionResult]::new('auth', 'auth', [CompletionResultType]::ParameterValue, 'Users, access keys, identity and registry policies, and decisions explained')
            [CompletionResult]::new('get-login-password', 'get-login-password', [CompletionResultType]::ParameterValue, 'Print a registry password (12 hours) for `docker login -u AWS --password-stdin`')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Log in to a remote registry (for mirroring), or list the logins')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget the credentials of a remote registry')
            [CompletionResult]::new('mirror', 'mirror', [CompletionResultType]::ParameterValue, 'Copy images to and from other registries, on demand, on a schedule, or as they are pushed (replication)')
            [CompletionResult]::new('tls', 'tls', [CompletionResultType]::ParameterValue, 'Show how clients come to trust the HTTPS registry (ecrld''s CA)')
            [CompletionResult]::new('gc', 'gc', [CompletionResultType]::ParameterValue, 'Collect garbage now: blobs and links nothing holds (--dry-run counts them)')
            [CompletionResult]::new('fsck', 'fsck', [CompletionResultType]::ParameterValue, 'Check every blob against its digest and the metadata against the disk (--repair)')
            [CompletionResult]::new('events', 'events', [CompletionResultType]::ParameterValue, 'Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks')
            [CompletionResult]::new('storage', 'storage', [CompletionResultType]::ParameterValue, 'Move the registry onto the backends several ecrld share (S3 and PostgreSQL)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('generate-docs', 'generate-docs', [CompletionResultType]::ParameterValue, 'Write completion scripts and man pages into a directory (for packagers and the tests)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;daemon' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Start ecrld in the background and wait until it answers')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop ecrld and wait until it is gone')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print the log of an ecrld started with ''ecrl daemon start''')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;daemon;start' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Where blobs and metadata live [default: ~/.local/share/ecrl]')
            [CompletionResult]::new('--registry-addr', '--registry-addr', [CompletionResultType]::ParameterName, 'Address the registry listens on over plain HTTP (port 0 picks a free port; `none` turns plain HTTP off when --tls is on) [default: 127.0.0.1:5000]')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Also serve the registry over HTTPS, on --tls-addr (`--tls=false` turns it off) [default: off]')
            [CompletionResult]::new('--tls-addr', '--tls-addr', [CompletionResultType]::ParameterName, 'Address the HTTPS registry listens on (port 0 picks a free port) [default: 127.0.0.1:5443]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate chain to serve HTTPS with, instead of one from ecrld''s own CA (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)')
            [CompletionResult]::new('--tls-names', '--tls-names', [CompletionResultType]::ParameterName, 'Extra DNS names or IP addresses the generated server certificate is valid for, besides localhost, 127.0.0.1 and ::1 (comma-separated)')
            [CompletionResult]::new('--metrics-addr', '--metrics-addr', [CompletionResultType]::ParameterName, 'Serve Prometheus metrics at http://HOST:PORT/metrics (alone: on 127.0.0.1:9105; `none` turns them off) [default: off]')
            [CompletionResult]::new('--task-endpoint', '--task-endpoint', [CompletionResultType]::ParameterName, 'Where tasks'' containers reach the task metadata endpoint and their task role''s credentials, IP:PORT (`none` turns it off) [default: 169.254.170.2:80]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'YAML config file [default: ~/.config/ecrl/config.yaml when it exists]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format on stderr [default: text]')
            [CompletionResult]::new('--anonymous', '--anonymous', [CompletionResultType]::ParameterName, 'What the registry allows without credentials: none, pull (anyone may pull), or all (no registry authentication: throwaway local use only) [default: none]')
            [CompletionResult]::new('--encryption', '--encryption', [CompletionResultType]::ParameterName, 'Encryption of blobs at rest, chosen when the data dir is created; a data dir keeps its mode, and asking for another one is an error [default: aes256-gcm for a new data dir, else the data dir''s own]')
            [CompletionResult]::new('--metadata-backend', '--metadata-backend', [CompletionResultType]::ParameterName, 'Where repositories, tags, users, policies and task definitions are kept: sqlite (in the data dir) or postgres (shared by several ecrld; needs --postgres-url) [default: sqlite]')
            [CompletionResult]::new('--postgres-url', '--postgres-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL for --metadata-backend postgres, e.g. postgres://ecrl:PASSWORD@db.example:5432/ecrl?sslmode=require')
            [CompletionResult]::new('--postgres-ca', '--postgres-ca', [CompletionResultType]::ParameterName, 'PEM file of the CA that signed PostgreSQL''s certificate (else the system''s roots)')
            [CompletionResult]::new('--storage-backend', '--storage-backend', [CompletionResultType]::ParameterName, 'Where blob content lives: the data dir, or an S3-compatible object store (--s3-*; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN or the config file) [default: filesystem]')
            [CompletionResult]::new('--s3-endpoint', '--s3-endpoint', [CompletionResultType]::ParameterName, 'The S3 endpoint URL, e.g. http://127.0.0.1:8333 (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]')
            [CompletionResult]::new('--s3-bucket', '--s3-bucket', [CompletionResultType]::ParameterName, 'The bucket blobs are kept in (it must exist)')
            [CompletionResult]::new('--s3-prefix', '--s3-prefix', [CompletionResultType]::ParameterName, 'A key prefix within the bucket, so that several registries can share one [default: none]')
            [CompletionResult]::new('--s3-region', '--s3-region', [CompletionResultType]::ParameterName, 'The bucket''s region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]')
            [CompletionResult]::new('--s3-addressing', '--s3-addressing', [CompletionResultType]::ParameterName, 'How buckets are addressed: path (http://endpoint/bucket/key) or virtual-host (http://bucket.endpoint/key) [default: path with --s3-endpoint, virtual-host for AWS]')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Seconds to wait for the daemon to answer')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;daemon;stop' {
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Seconds to wait for the daemon to exit')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;daemon;status' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;daemon;logs' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Print only the last N lines')
            [CompletionResult]::new('--tail', '--tail', [CompletionResultType]::ParameterName, 'Print only the last N lines')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new lines as they are written')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new lines as they are written')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;daemon;help' {
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Start ecrld in the background and wait until it answers')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop ecrld and wait until it is gone')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print the log of an ecrld started with ''ecrl daemon start''')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;daemon;help;start' {
            break
        }
        'ecrl;daemon;help;stop' {
            break
        }
        'ecrl;daemon;help;status' {
            break
        }
        'ecrl;daemon;help;logs' {
            break
        }
        'ecrl;daemon;help;help' {
            break
        }
        'ecrl;repo' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a repository')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List repositories, optionally those whose name starts with PREFIX')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show a repository: URI, creation time, image count, size')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a repository (one that holds images needs --force)')
            [CompletionResult]::new('push', 'push', [CompletionResultType]::ParameterValue, 'Push an image from an archive, an OCI layout or the Docker engine into a repository')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Pull an image into an archive, an OCI layout or the Docker engine')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Set, print or remove a repository''s policy (ECR repository policies, IAM JSON)')
            [CompletionResult]::new('lifecycle', 'lifecycle', [CompletionResultType]::ParameterValue, 'Lifecycle policies (ECR''s): expire images by tag, count and age, on a schedule')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value')
            [CompletionResult]::new('untag', 'untag', [CompletionResultType]::ParameterValue, 'Remove resource tags from a repository by key (ECR UntagResource)')
            [CompletionResult]::new('put-mutability', 'put-mutability', [CompletionResultType]::ParameterValue, 'Change whether tags may move (ECR PutImageTagMutability), with exclusions')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;repo;create' {
            [CompletionResult]::new('--tag-mutability', '--tag-mutability', [CompletionResultType]::ParameterName, 'Whether a pushed tag may later point at another image')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. ''latest'' or ''dev-*'' (repeatable, up to 5)')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'A resource tag KEY=VALUE (repeatable)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;describe' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Delete it even if it holds images')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;push' {
            [CompletionResult]::new('--compression', '--compression', [CompletionResultType]::ParameterName, 'How layers that arrive uncompressed are stored [daemon default: gzip]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;pull' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the archive to FILE (a directory with --format oci); ''-'' is stdout')
            [CompletionResult]::new('--output-file', '--output-file', [CompletionResultType]::ParameterName, 'Write the archive to FILE (a directory with --format oci); ''-'' is stdout')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'What to write')
            [CompletionResult]::new('--platform', '--platform', [CompletionResultType]::ParameterName, 'Which image of a multi-platform index, e.g. linux/arm64')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Load the image into a local engine instead of writing an archive')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;policy' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s policy')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;repo;policy;set' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'f')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'file')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;policy;get' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;policy;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;policy;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s policy')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;repo;policy;help;set' {
            break
        }
        'ecrl;repo;policy;help;get' {
            break
        }
        'ecrl;repo;policy;help;delete' {
            break
        }
        'ecrl;repo;policy;help;help' {
            break
        }
        'ecrl;repo;lifecycle' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s lifecycle policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s lifecycle policy')
            [CompletionResult]::new('preview', 'preview', [CompletionResultType]::ParameterValue, 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Apply the repository''s policy now; prints what it expired')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;repo;lifecycle;set' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'f')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'file')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;lifecycle;get' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;lifecycle;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;lifecycle;preview' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'f')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'file')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;lifecycle;run' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;lifecycle;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s lifecycle policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s lifecycle policy')
            [CompletionResult]::new('preview', 'preview', [CompletionResultType]::ParameterValue, 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Apply the repository''s policy now; prints what it expired')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;repo;lifecycle;help;set' {
            break
        }
        'ecrl;repo;lifecycle;help;get' {
            break
        }
        'ecrl;repo;lifecycle;help;delete' {
            break
        }
        'ecrl;repo;lifecycle;help;preview' {
            break
        }
        'ecrl;repo;lifecycle;help;run' {
            break
        }
        'ecrl;repo;lifecycle;help;help' {
            break
        }
        'ecrl;repo;tag' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;untag' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;put-mutability' {
            [CompletionResult]::new('--tag-mutability', '--tag-mutability', [CompletionResultType]::ParameterName, 'Whether a pushed tag may later point at another image')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. ''latest'' or ''dev-*'' (repeatable, up to 5)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;repo;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a repository')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List repositories, optionally those whose name starts with PREFIX')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show a repository: URI, creation time, image count, size')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a repository (one that holds images needs --force)')
            [CompletionResult]::new('push', 'push', [CompletionResultType]::ParameterValue, 'Push an image from an archive, an OCI layout or the Docker engine into a repository')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Pull an image into an archive, an OCI layout or the Docker engine')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Set, print or remove a repository''s policy (ECR repository policies, IAM JSON)')
            [CompletionResult]::new('lifecycle', 'lifecycle', [CompletionResultType]::ParameterValue, 'Lifecycle policies (ECR''s): expire images by tag, count and age, on a schedule')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value')
            [CompletionResult]::new('untag', 'untag', [CompletionResultType]::ParameterValue, 'Remove resource tags from a repository by key (ECR UntagResource)')
            [CompletionResult]::new('put-mutability', 'put-mutability', [CompletionResultType]::ParameterValue, 'Change whether tags may move (ECR PutImageTagMutability), with exclusions')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;repo;help;create' {
            break
        }
        'ecrl;repo;help;list' {
            break
        }
        'ecrl;repo;help;describe' {
            break
        }
        'ecrl;repo;help;delete' {
            break
        }
        'ecrl;repo;help;push' {
            break
        }
        'ecrl;repo;help;pull' {
            break
        }
        'ecrl;repo;help;policy' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s policy')
            break
        }
        'ecrl;repo;help;policy;set' {
            break
        }
        'ecrl;repo;help;policy;get' {
            break
        }
        'ecrl;repo;help;policy;delete' {
            break
        }
        'ecrl;repo;help;lifecycle' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s lifecycle policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s lifecycle policy')
            [CompletionResult]::new('preview', 'preview', [CompletionResultType]::ParameterValue, 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Apply the repository''s policy now; prints what it expired')
            break
        }
        'ecrl;repo;help;lifecycle;set' {
            break
        }
        'ecrl;repo;help;lifecycle;get' {
            break
        }
        'ecrl;repo;help;lifecycle;delete' {
            break
        }
        'ecrl;repo;help;lifecycle;preview' {
            break
        }
        'ecrl;repo;help;lifecycle;run' {
            break
        }
        'ecrl;repo;help;tag' {
            break
        }
        'ecrl;repo;help;untag' {
            break
        }
        'ecrl;repo;help;put-mutability' {
            break
        }
        'ecrl;repo;help;help' {
            break
        }
        'ecrl;image' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a repository''s images (digest and tag pairs)')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Give an existing image another tag')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;image;list' {
            [CompletionResult]::new('--tag-status', '--tag-status', [CompletionResultType]::ParameterName, 'Which images to list')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--expiring', '--expiring', [CompletionResultType]::ParameterName, 'Only the images the repository''s lifecycle policy expires at its next run, with the rule that expires each (see `ecrl repo lifecycle preview` for why others stay)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;image;describe' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;image;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;image;tag' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;image;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a repository''s images (digest and tag pairs)')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Give an existing image another tag')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;image;help;list' {
            break
        }
        'ecrl;image;help;describe' {
            break
        }
        'ecrl;image;help;delete' {
            break
        }
        'ecrl;image;help;tag' {
            break
        }
        'ecrl;image;help;help' {
            break
        }
        'ecrl;task' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('register', 'register', [CompletionResultType]::ParameterValue, 'Register a task definition (ECS JSON or YAML) as its family''s next revision')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)')
            [CompletionResult]::new('families', 'families', [CompletionResultType]::ParameterValue, 'List task definition families')
            [CompletionResult]::new('deregister', 'deregister', [CompletionResultType]::ParameterValue, 'Deregister a revision: it becomes INACTIVE and can no longer be run')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete INACTIVE revisions')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run tasks of a definition on the local container runtime (ECS RunTask)')
            [CompletionResult]::new('ps', 'ps', [CompletionResultType]::ParameterValue, 'List tasks, newest first')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Show a task: its state, stop code and reason, containers, exit codes, ports')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print what a task''s containers wrote (kept after the task stopped)')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one''s stopTimeout; returns once it is STOPPED')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until a task stops (or runs) and exit with its exit code')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;task;register' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The task definition: a JSON or YAML file, or - for stdin')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The task definition: a JSON or YAML file, or - for stdin')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;describe' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;list' {
            [CompletionResult]::new('--family-prefix', '--family-prefix', [CompletionResultType]::ParameterName, 'Only this family''s revisions (the full family name, as ECS takes it)')
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'Revisions with this status [default: ACTIVE]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;families' {
            [CompletionResult]::new('--family-prefix', '--family-prefix', [CompletionResultType]::ParameterName, 'Only families whose name starts with this')
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'ACTIVE: families with an ACTIVE revision; INACTIVE: families with none [default: all]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;deregister' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;run' {
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'How many tasks to start (1-10), each independent')
            [CompletionResult]::new('-e', '-e', [CompletionResultType]::ParameterName, 'Set an environment variable in one container: CONTAINER.NAME=VALUE (repeatable)')
            [CompletionResult]::new('--env', '--env', [CompletionResultType]::ParameterName, 'Set an environment variable in one container: CONTAINER.NAME=VALUE (repeatable)')
            [CompletionResult]::new('--overrides', '--overrides', [CompletionResultType]::ParameterName, 'RunTask overrides, JSON or YAML as ECS takes them ({"containerOverrides": [...]})')
            [CompletionResult]::new('--started-by', '--started-by', [CompletionResultType]::ParameterName, 'Who started the task (ECS startedBy), for filtering in ''ecrl task ps''')
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'The cluster to run in (name or ARN; ''ecrl cluster create'' makes one) [default: default]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Follow the tasks until they stop and exit with the exit code of the essential container that stopped them (0 when every essential container exited 0)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;ps' {
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'Only tasks of this cluster (name or ARN) [default: every cluster''s]')
            [CompletionResult]::new('--family', '--family', [CompletionResultType]::ParameterName, 'Only tasks of this family')
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'RUNNING: every task not yet stopped; STOPPED: the stopped ones')
            [CompletionResult]::new('--started-by', '--started-by', [CompletionResultType]::ParameterName, 'Only tasks started with this --started-by')
            [CompletionResult]::new('--service', '--service', [CompletionResultType]::ParameterName, 'Only the tasks of this service')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;inspect' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;logs' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Only this container''s output')
            [CompletionResult]::new('--container', '--container', [CompletionResultType]::ParameterName, 'Only this container''s output')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new output until the task stops')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new output until the task stops')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;stop' {
            [CompletionResult]::new('--reason', '--reason', [CompletionResultType]::ParameterName, 'Why (recorded as the task''s stoppedReason)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;wait' {
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'The state to wait for: STOPPED exits with the task''s exit code; RUNNING exits 0 once it runs, 1 if it stopped instead')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;task;help' {
            [CompletionResult]::new('register', 'register', [CompletionResultType]::ParameterValue, 'Register a task definition (ECS JSON or YAML) as its family''s next revision')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)')
            [CompletionResult]::new('families', 'families', [CompletionResultType]::ParameterValue, 'List task definition families')
            [CompletionResult]::new('deregister', 'deregister', [CompletionResultType]::ParameterValue, 'Deregister a revision: it becomes INACTIVE and can no longer be run')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete INACTIVE revisions')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run tasks of a definition on the local container runtime (ECS RunTask)')
            [CompletionResult]::new('ps', 'ps', [CompletionResultType]::ParameterValue, 'List tasks, newest first')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Show a task: its state, stop code and reason, containers, exit codes, ports')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print what a task''s containers wrote (kept after the task stopped)')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one''s stopTimeout; returns once it is STOPPED')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until a task stops (or runs) and exit with its exit code')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;task;help;register' {
            break
        }
        'ecrl;task;help;describe' {
            break
        }
        'ecrl;task;help;list' {
            break
        }
        'ecrl;task;help;families' {
            break
        }
        'ecrl;task;help;deregister' {
            break
        }
        'ecrl;task;help;delete' {
            break
        }
        'ecrl;task;help;run' {
            break
        }
        'ecrl;task;help;ps' {
            break
        }
        'ecrl;task;help;inspect' {
            break
        }
        'ecrl;task;help;logs' {
            break
        }
        'ecrl;task;help;stop' {
            break
        }
        'ecrl;task;help;wait' {
            break
        }
        'ecrl;task;help;help' {
            break
        }
        'ecrl;service' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a service (ECS CreateService): its tasks start at once')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a service (ECS UpdateService): another revision, count or bounds')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show services: counts, deployments and their rollout, the latest events')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List services, with their counts')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;service;create' {
            [CompletionResult]::new('--task-definition', '--task-definition', [CompletionResultType]::ParameterName, 'FAMILY (its latest ACTIVE revision), FAMILY:REVISION or an ARN')
            [CompletionResult]::new('--desired-count', '--desired-count', [CompletionResultType]::ParameterName, 'Tasks to keep running [default: 1]')
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'The cluster [default: default]')
            [CompletionResult]::new('--min-healthy-percent', '--min-healthy-percent', [CompletionResultType]::ParameterName, 'Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]')
            [CompletionResult]::new('--max-percent', '--max-percent', [CompletionResultType]::ParameterName, 'Of the desired count, the most tasks at once during a rollout [default: 200]')
            [CompletionResult]::new('--circuit-breaker', '--circuit-breaker', [CompletionResultType]::ParameterName, 'The deployment circuit breaker [default: off]')
            [CompletionResult]::new('--health-check-grace-period', '--health-check-grace-period', [CompletionResultType]::ParameterName, 'Seconds a new task''s failing health checks are not held against it')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;service;update' {
            [CompletionResult]::new('--task-definition', '--task-definition', [CompletionResultType]::ParameterName, 'Roll out this revision: FAMILY, FAMILY:REVISION or an ARN')
            [CompletionResult]::new('--desired-count', '--desired-count', [CompletionResultType]::ParameterName, 'desired-count')
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'cluster')
            [CompletionResult]::new('--min-healthy-percent', '--min-healthy-percent', [CompletionResultType]::ParameterName, 'Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]')
            [CompletionResult]::new('--max-percent', '--max-percent', [CompletionResultType]::ParameterName, 'Of the desired count, the most tasks at once during a rollout [default: 200]')
            [CompletionResult]::new('--circuit-breaker', '--circuit-breaker', [CompletionResultType]::ParameterName, 'The deployment circuit breaker [default: off]')
            [CompletionResult]::new('--health-check-grace-period', '--health-check-grace-period', [CompletionResultType]::ParameterName, 'Seconds a new task''s failing health checks are not held against it')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--force-new-deployment', '--force-new-deployment', [CompletionResultType]::ParameterName, 'Deploy the same revision again (new tasks replace the running ones)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;service;describe' {
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'The cluster [default: default]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;service;list' {
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'Only this cluster''s [default: every cluster''s]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;service;delete' {
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'cluster')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Delete it even though its desired count is above 0')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;service;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a service (ECS CreateService): its tasks start at once')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a service (ECS UpdateService): another revision, count or bounds')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show services: counts, deployments and their rollout, the latest events')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List services, with their counts')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;service;help;create' {
            break
        }
        'ecrl;service;help;update' {
            break
        }
        'ecrl;service;help;describe' {
            break
        }
        'ecrl;service;help;list' {
            break
        }
        'ecrl;service;help;delete' {
            break
        }
        'ecrl;service;help;help' {
            break
        }
        'ecrl;logs' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new output until the tasks stop')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new output until the tasks stop')
            [CompletionResult]::new('--streams', '--streams', [CompletionResultType]::ParameterName, 'List the group''s streams instead')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;secret' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('put', 'put', [CompletionResultType]::ParameterValue, 'Store a secret''s value (a new version: the one before stays as AWSPREVIOUS)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a secret''s value')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the secrets'' names and versions (never their values)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a secret')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;secret;put' {
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'Read the value from a file (as it is)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--value-stdin', '--value-stdin', [CompletionResultType]::ParameterName, 'Read the value from standard input (without a trailing newline)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;secret;get' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;secret;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;secret;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;secret;help' {
            [CompletionResult]::new('put', 'put', [CompletionResultType]::ParameterValue, 'Store a secret''s value (a new version: the one before stays as AWSPREVIOUS)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a secret''s value')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the secrets'' names and versions (never their values)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a secret')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;secret;help;put' {
            break
        }
        'ecrl;secret;help;get' {
            break
        }
        'ecrl;secret;help;list' {
            break
        }
        'ecrl;secret;help;delete' {
            break
        }
        'ecrl;secret;help;help' {
            break
        }
        'ecrl;cluster' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a cluster (ECS CreateCluster); creating one that exists shows it')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List clusters (ECS ListClusters), with their task counts')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;cluster;create' {
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'A resource tag, KEY=VALUE (repeatable)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;cluster;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;cluster;describe' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;cluster;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;cluster;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a cluster (ECS CreateCluster); creating one that exists shows it')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List clusters (ECS ListClusters), with their task counts')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;cluster;help;create' {
            break
        }
        'ecrl;cluster;help;list' {
            break
        }
        'ecrl;cluster;help;describe' {
            break
        }
        'ecrl;cluster;help;delete' {
            break
        }
        'ecrl;cluster;help;help' {
            break
        }
        'ecrl;auth' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Registry users and their access keys')
            [CompletionResult]::new('key', 'key', [CompletionResultType]::ParameterValue, 'Access keys')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Identity policies attached to users (IAM JSON or YAML)')
            [CompletionResult]::new('registry-policy', 'registry-policy', [CompletionResultType]::ParameterValue, 'The registry policy (ECR PutRegistryPolicy): applies to every repository')
            [CompletionResult]::new('simulate', 'simulate', [CompletionResultType]::ParameterValue, 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;user' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print its access key id and secret (shown this once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users, their access key ids and policies')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user with its keys and policies; its tokens stop working')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;user;create' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;user;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;user;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;user;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print its access key id and secret (shown this once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users, their access key ids and policies')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user with its keys and policies; its tokens stop working')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;user;help;create' {
            break
        }
        'ecrl;auth;user;help;list' {
            break
        }
        'ecrl;auth;user;help;delete' {
            break
        }
        'ecrl;auth;user;help;help' {
            break
        }
        'ecrl;auth;key' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the owner''s access keys (never their secrets)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an owner access key: it stops working at once')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;key;rotate' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;key;create' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;key;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;key;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;key;help' {
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the owner''s access keys (never their secrets)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an owner access key: it stops working at once')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;key;help;rotate' {
            break
        }
        'ecrl;auth;key;help;create' {
            break
        }
        'ecrl;auth;key;help;list' {
            break
        }
        'ecrl;auth;key;help;delete' {
            break
        }
        'ecrl;auth;key;help;help' {
            break
        }
        'ecrl;auth;policy' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it')
            [CompletionResult]::new('detach', 'detach', [CompletionResultType]::ParameterValue, 'Detach a user''s policy by name')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s policies (with their documents in --output json)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;policy;attach' {
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'The policy''s name')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;policy;detach' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;policy;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;policy;help' {
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it')
            [CompletionResult]::new('detach', 'detach', [CompletionResultType]::ParameterValue, 'Detach a user''s policy by name')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s policies (with their documents in --output json)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;policy;help;attach' {
            break
        }
        'ecrl;auth;policy;help;detach' {
            break
        }
        'ecrl;auth;policy;help;list' {
            break
        }
        'ecrl;auth;policy;help;help' {
            break
        }
        'ecrl;auth;registry-policy' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the registry policy from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print the registry policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove the registry policy')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;registry-policy;set' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'f')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'file')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;registry-policy;get' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;registry-policy;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;registry-policy;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the registry policy from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print the registry policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove the registry policy')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;registry-policy;help;set' {
            break
        }
        'ecrl;auth;registry-policy;help;get' {
            break
        }
        'ecrl;auth;registry-policy;help;delete' {
            break
        }
        'ecrl;auth;registry-policy;help;help' {
            break
        }
        'ecrl;auth;simulate' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;auth;help' {
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Registry users and their access keys')
            [CompletionResult]::new('key', 'key', [CompletionResultType]::ParameterValue, 'Access keys')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Identity policies attached to users (IAM JSON or YAML)')
            [CompletionResult]::new('registry-policy', 'registry-policy', [CompletionResultType]::ParameterValue, 'The registry policy (ECR PutRegistryPolicy): applies to every repository')
            [CompletionResult]::new('simulate', 'simulate', [CompletionResultType]::ParameterValue, 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;auth;help;user' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print its access key id and secret (shown this once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users, their access key ids and policies')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user with its keys and policies; its tokens stop working')
            break
        }
        'ecrl;auth;help;user;create' {
            break
        }
        'ecrl;auth;help;user;list' {
            break
        }
        'ecrl;auth;help;user;delete' {
            break
        }
        'ecrl;auth;help;key' {
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the owner''s access keys (never their secrets)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an owner access key: it stops working at once')
            break
        }
        'ecrl;auth;help;key;rotate' {
            break
        }
        'ecrl;auth;help;key;create' {
            break
        }
        'ecrl;auth;help;key;list' {
            break
        }
        'ecrl;auth;help;key;delete' {
            break
        }
        'ecrl;auth;help;policy' {
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it')
            [CompletionResult]::new('detach', 'detach', [CompletionResultType]::ParameterValue, 'Detach a user''s policy by name')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s policies (with their documents in --output json)')
            break
        }
        'ecrl;auth;help;policy;attach' {
            break
        }
        'ecrl;auth;help;policy;detach' {
            break
        }
        'ecrl;auth;help;policy;list' {
            break
        }
        'ecrl;auth;help;registry-policy' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the registry policy from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print the registry policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove the registry policy')
            break
        }
        'ecrl;auth;help;registry-policy;set' {
            break
        }
        'ecrl;auth;help;registry-policy;get' {
            break
        }
        'ecrl;auth;help;registry-policy;delete' {
            break
        }
        'ecrl;auth;help;simulate' {
            break
        }
        'ecrl;auth;help;help' {
            break
        }
        'ecrl;get-login-password' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'A token for this user instead of the registry''s owner')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;login' {
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'The user name [asked for on a terminal]')
            [CompletionResult]::new('--username', '--username', [CompletionResultType]::ParameterName, 'The user name [asked for on a terminal]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--password-stdin', '--password-stdin', [CompletionResultType]::ParameterName, 'Read the password from stdin (a terminal asks for it, unechoed)')
            [CompletionResult]::new('--list', '--list', [CompletionResultType]::ParameterName, 'List the registries ecrl holds credentials for (never the secrets)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;logout' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('sync', 'sync', [CompletionResultType]::ParameterValue, 'Copy images between this registry and others, or between two others')
            [CompletionResult]::new('jobs', 'jobs', [CompletionResultType]::ParameterValue, 'List the scheduled syncs: last run, result, next run')
            [CompletionResult]::new('job', 'job', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync, or run it now')
            [CompletionResult]::new('replication', 'replication', [CompletionResultType]::ParameterValue, 'Rules that send every pushed image to remote registries, and each image''s status')
            [CompletionResult]::new('cache', 'cache', [CompletionResultType]::ParameterValue, 'Pull-through cache rules: pulls under a prefix answered from an upstream registry')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;sync' {
            [CompletionResult]::new('--tags', '--tags', [CompletionResultType]::ParameterName, 'The tags of the source repository that match this regular expression (whole tag)')
            [CompletionResult]::new('--platform', '--platform', [CompletionResultType]::ParameterName, 'Only this platform of a multi-platform image (os/arch[/variant]; repeatable)')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Images copied at once [default: 4]')
            [CompletionResult]::new('--every', '--every', [CompletionResultType]::ParameterName, 'Make it a job the daemon runs every DURATION (30m, 1h, 1d)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--all-tags', '--all-tags', [CompletionResultType]::ParameterName, 'Every tag of the source repository')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Say what would be copied; copy nothing')
            [CompletionResult]::new('--no-referrers', '--no-referrers', [CompletionResultType]::ParameterName, 'Leave out signatures, SBOMs and other images that refer to the copied ones')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;jobs' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;job' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run a scheduled sync now (and show its progress)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;job;rm' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;job;run' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;job;help' {
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run a scheduled sync now (and show its progress)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;job;help;rm' {
            break
        }
        'ecrl;mirror;job;help;run' {
            break
        }
        'ecrl;mirror;job;help;help' {
            break
        }
        'ecrl;mirror;replication' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show the replication rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove every replication rule (copies already queued still run)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Where an image was replicated to, and how that went')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;replication;set' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'f')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'file')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;replication;get' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;replication;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;replication;status' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;replication;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show the replication rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove every replication rule (copies already queued still run)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Where an image was replicated to, and how that went')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;replication;help;set' {
            break
        }
        'ecrl;mirror;replication;help;get' {
            break
        }
        'ecrl;mirror;replication;help;delete' {
            break
        }
        'ecrl;mirror;replication;help;status' {
            break
        }
        'ecrl;mirror;replication;help;help' {
            break
        }
        'ecrl;mirror;cache' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a rule (what it cached stays)')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Reach a rule''s upstream and check its credentials')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;cache;create' {
            [CompletionResult]::new('--upstream-prefix', '--upstream-prefix', [CompletionResultType]::ParameterName, 'Put before each repository''s name upstream')
            [CompletionResult]::new('--login', '--login', [CompletionResultType]::ParameterName, 'Use the credentials kept for this registry name (default: the upstream''s)')
            [CompletionResult]::new('--tag-ttl', '--tag-ttl', [CompletionResultType]::ParameterName, 'How long a cached tag is served before it is checked upstream again [default: 24h]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--docker-hub-mirror', '--docker-hub-mirror', [CompletionResultType]::ParameterName, 'Also answer docker''s registry-mirrors (Docker Hub names without the prefix)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;cache;list' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;cache;delete' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;cache;validate' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;mirror;cache;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a rule (what it cached stays)')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Reach a rule''s upstream and check its credentials')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;cache;help;create' {
            break
        }
        'ecrl;mirror;cache;help;list' {
            break
        }
        'ecrl;mirror;cache;help;delete' {
            break
        }
        'ecrl;mirror;cache;help;validate' {
            break
        }
        'ecrl;mirror;cache;help;help' {
            break
        }
        'ecrl;mirror;help' {
            [CompletionResult]::new('sync', 'sync', [CompletionResultType]::ParameterValue, 'Copy images between this registry and others, or between two others')
            [CompletionResult]::new('jobs', 'jobs', [CompletionResultType]::ParameterValue, 'List the scheduled syncs: last run, result, next run')
            [CompletionResult]::new('job', 'job', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync, or run it now')
            [CompletionResult]::new('replication', 'replication', [CompletionResultType]::ParameterValue, 'Rules that send every pushed image to remote registries, and each image''s status')
            [CompletionResult]::new('cache', 'cache', [CompletionResultType]::ParameterValue, 'Pull-through cache rules: pulls under a prefix answered from an upstream registry')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;mirror;help;sync' {
            break
        }
        'ecrl;mirror;help;jobs' {
            break
        }
        'ecrl;mirror;help;job' {
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run a scheduled sync now (and show its progress)')
            break
        }
        'ecrl;mirror;help;job;rm' {
            break
        }
        'ecrl;mirror;help;job;run' {
            break
        }
        'ecrl;mirror;help;replication' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show the replication rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove every replication rule (copies already queued still run)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Where an image was replicated to, and how that went')
            break
        }
        'ecrl;mirror;help;replication;set' {
            break
        }
        'ecrl;mirror;help;replication;get' {
            break
        }
        'ecrl;mirror;help;replication;delete' {
            break
        }
        'ecrl;mirror;help;replication;status' {
            break
        }
        'ecrl;mirror;help;cache' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a rule (what it cached stays)')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Reach a rule''s upstream and check its credentials')
            break
        }
        'ecrl;mirror;help;cache;create' {
            break
        }
        'ecrl;mirror;help;cache;list' {
            break
        }
        'ecrl;mirror;help;cache;delete' {
            break
        }
        'ecrl;mirror;help;cache;validate' {
            break
        }
        'ecrl;mirror;help;help' {
            break
        }
        'ecrl;tls' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('ca', 'ca', [CompletionResultType]::ParameterValue, 'Print the path of ecrld''s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;tls;ca' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;tls;help' {
            [CompletionResult]::new('ca', 'ca', [CompletionResultType]::ParameterValue, 'Print the path of ecrld''s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;tls;help;ca' {
            break
        }
        'ecrl;tls;help;help' {
            break
        }
        'ecrl;gc' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Count what would go; remove nothing')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;fsck' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('--repair', '--repair', [CompletionResultType]::ParameterName, 'Move corrupt blobs to <data dir>/quarantine/, drop links to lost blobs, and mark the images that lost content (their pulls then say so, until pushed again)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;events' {
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only events newer than this: 90s, 30m, 24h, 7d')
            [CompletionResult]::new('--type', '--type', [CompletionResultType]::ParameterName, 'Only events of these types (repeat it, or separate with commas): image-push, image-delete, replication, cache, repository, policy, gc, task, task-definition')
            [CompletionResult]::new('--repository', '--repository', [CompletionResultType]::ParameterName, 'Only the events of one repository')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'At most this many, the newest [default: 100; at most 1000]')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many, the newest [default: 100; at most 1000]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing events as they happen, until interrupted')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing events as they happen, until interrupted')
            [CompletionResult]::new('--webhooks', '--webhooks', [CompletionResultType]::ParameterName, 'Show each configured webhook instead: delivered, pending, and the deliveries that failed')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;storage' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Move this registry''s blobs into an object store and/or its metadata into PostgreSQL')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;storage;migrate' {
            [CompletionResult]::new('--s3-bucket', '--s3-bucket', [CompletionResultType]::ParameterName, 'The bucket to copy the blobs into (it must exist)')
            [CompletionResult]::new('--s3-endpoint', '--s3-endpoint', [CompletionResultType]::ParameterName, 'The S3 endpoint URL (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]')
            [CompletionResult]::new('--s3-prefix', '--s3-prefix', [CompletionResultType]::ParameterName, 'A key prefix within the bucket')
            [CompletionResult]::new('--s3-region', '--s3-region', [CompletionResultType]::ParameterName, 'The bucket''s region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]')
            [CompletionResult]::new('--s3-addressing', '--s3-addressing', [CompletionResultType]::ParameterName, 'How buckets are addressed [default: path with --s3-endpoint, virtual-host for AWS]')
            [CompletionResult]::new('--postgres-url', '--postgres-url', [CompletionResultType]::ParameterName, 'The empty PostgreSQL database to copy the metadata into')
            [CompletionResult]::new('--postgres-ca', '--postgres-ca', [CompletionResultType]::ParameterName, 'PEM file of the CA that signed PostgreSQL''s certificate')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'A config file naming the new backends (storage.backend: s3, metadata.backend: postgres)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;storage;help' {
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Move this registry''s blobs into an object store and/or its metadata into PostgreSQL')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;storage;help;migrate' {
            break
        }
        'ecrl;storage;help;help' {
            break
        }
        'ecrl;completions' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;generate-docs' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format for results on stdout')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results: no progress, no notes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ecrl;help' {
            [CompletionResult]::new('daemon', 'daemon', [CompletionResultType]::ParameterValue, 'Start, stop and inspect the ecrld daemon')
            [CompletionResult]::new('repo', 'repo', [CompletionResultType]::ParameterValue, 'Create, list, describe and delete repositories')
            [CompletionResult]::new('image', 'image', [CompletionResultType]::ParameterValue, 'List, describe, delete and tag images')
            [CompletionResult]::new('task', 'task', [CompletionResultType]::ParameterValue, 'Register, describe, list, deregister and delete ECS task definitions')
            [CompletionResult]::new('service', 'service', [CompletionResultType]::ParameterValue, 'ECS services: a task definition kept running N times, rolled out revision by revision')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print containers'' output by awslogs log group and stream (-f follows)')
            [CompletionResult]::new('secret', 'secret', [CompletionResultType]::ParameterValue, 'Keep secrets (passwords, keys) that tasks'' `secrets` put in their environment')
            [CompletionResult]::new('cluster', 'cluster', [CompletionResultType]::ParameterValue, 'Create, list, describe and delete ECS clusters (groups of tasks)')
            [CompletionResult]::new('auth', 'auth', [CompletionResultType]::ParameterValue, 'Users, access keys, identity and registry policies, and decisions explained')
            [CompletionResult]::new('get-login-password', 'get-login-password', [CompletionResultType]::ParameterValue, 'Print a registry password (12 hours) for `docker login -u AWS --password-stdin`')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Log in to a remote registry (for mirroring), or list the logins')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget the credentials of a remote registry')
            [CompletionResult]::new('mirror', 'mirror', [CompletionResultType]::ParameterValue, 'Copy images to and from other registries, on demand, on a schedule, or as they are pushed (replication)')
            [CompletionResult]::new('tls', 'tls', [CompletionResultType]::ParameterValue, 'Show how clients come to trust the HTTPS registry (ecrld''s CA)')
            [CompletionResult]::new('gc', 'gc', [CompletionResultType]::ParameterValue, 'Collect garbage now: blobs and links nothing holds (--dry-run counts them)')
            [CompletionResult]::new('fsck', 'fsck', [CompletionResultType]::ParameterValue, 'Check every blob against its digest and the metadata against the disk (--repair)')
            [CompletionResult]::new('events', 'events', [CompletionResultType]::ParameterValue, 'Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks')
            [CompletionResult]::new('storage', 'storage', [CompletionResultType]::ParameterValue, 'Move the registry onto the backends several ecrld share (S3 and PostgreSQL)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('generate-docs', 'generate-docs', [CompletionResultType]::ParameterValue, 'Write completion scripts and man pages into a directory (for packagers and the tests)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ecrl;help;daemon' {
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Start ecrld in the background and wait until it answers')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop ecrld and wait until it is gone')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print the log of an ecrld started with ''ecrl daemon start''')
            break
        }
        'ecrl;help;daemon;start' {
            break
        }
        'ecrl;help;daemon;stop' {
            break
        }
        'ecrl;help;daemon;status' {
            break
        }
        'ecrl;help;daemon;logs' {
            break
        }
        'ecrl;help;repo' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a repository')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List repositories, optionally those whose name starts with PREFIX')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show a repository: URI, creation time, image count, size')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a repository (one that holds images needs --force)')
            [CompletionResult]::new('push', 'push', [CompletionResultType]::ParameterValue, 'Push an image from an archive, an OCI layout or the Docker engine into a repository')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Pull an image into an archive, an OCI layout or the Docker engine')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Set, print or remove a repository''s policy (ECR repository policies, IAM JSON)')
            [CompletionResult]::new('lifecycle', 'lifecycle', [CompletionResultType]::ParameterValue, 'Lifecycle policies (ECR''s): expire images by tag, count and age, on a schedule')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value')
            [CompletionResult]::new('untag', 'untag', [CompletionResultType]::ParameterValue, 'Remove resource tags from a repository by key (ECR UntagResource)')
            [CompletionResult]::new('put-mutability', 'put-mutability', [CompletionResultType]::ParameterValue, 'Change whether tags may move (ECR PutImageTagMutability), with exclusions')
            break
        }
        'ecrl;help;repo;create' {
            break
        }
        'ecrl;help;repo;list' {
            break
        }
        'ecrl;help;repo;describe' {
            break
        }
        'ecrl;help;repo;delete' {
            break
        }
        'ecrl;help;repo;push' {
            break
        }
        'ecrl;help;repo;pull' {
            break
        }
        'ecrl;help;repo;policy' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s policy')
            break
        }
        'ecrl;help;repo;policy;set' {
            break
        }
        'ecrl;help;repo;policy;get' {
            break
        }
        'ecrl;help;repo;policy;delete' {
            break
        }
        'ecrl;help;repo;lifecycle' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a repository''s lifecycle policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove a repository''s lifecycle policy')
            [CompletionResult]::new('preview', 'preview', [CompletionResultType]::ParameterValue, 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Apply the repository''s policy now; prints what it expired')
            break
        }
        'ecrl;help;repo;lifecycle;set' {
            break
        }
        'ecrl;help;repo;lifecycle;get' {
            break
        }
        'ecrl;help;repo;lifecycle;delete' {
            break
        }
        'ecrl;help;repo;lifecycle;preview' {
            break
        }
        'ecrl;help;repo;lifecycle;run' {
            break
        }
        'ecrl;help;repo;tag' {
            break
        }
        'ecrl;help;repo;untag' {
            break
        }
        'ecrl;help;repo;put-mutability' {
            break
        }
        'ecrl;help;image' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a repository''s images (digest and tag pairs)')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Give an existing image another tag')
            break
        }
        'ecrl;help;image;list' {
            break
        }
        'ecrl;help;image;describe' {
            break
        }
        'ecrl;help;image;delete' {
            break
        }
        'ecrl;help;image;tag' {
            break
        }
        'ecrl;help;task' {
            [CompletionResult]::new('register', 'register', [CompletionResultType]::ParameterValue, 'Register a task definition (ECS JSON or YAML) as its family''s next revision')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)')
            [CompletionResult]::new('families', 'families', [CompletionResultType]::ParameterValue, 'List task definition families')
            [CompletionResult]::new('deregister', 'deregister', [CompletionResultType]::ParameterValue, 'Deregister a revision: it becomes INACTIVE and can no longer be run')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete INACTIVE revisions')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run tasks of a definition on the local container runtime (ECS RunTask)')
            [CompletionResult]::new('ps', 'ps', [CompletionResultType]::ParameterValue, 'List tasks, newest first')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Show a task: its state, stop code and reason, containers, exit codes, ports')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print what a task''s containers wrote (kept after the task stopped)')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one''s stopTimeout; returns once it is STOPPED')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until a task stops (or runs) and exit with its exit code')
            break
        }
        'ecrl;help;task;register' {
            break
        }
        'ecrl;help;task;describe' {
            break
        }
        'ecrl;help;task;list' {
            break
        }
        'ecrl;help;task;families' {
            break
        }
        'ecrl;help;task;deregister' {
            break
        }
        'ecrl;help;task;delete' {
            break
        }
        'ecrl;help;task;run' {
            break
        }
        'ecrl;help;task;ps' {
            break
        }
        'ecrl;help;task;inspect' {
            break
        }
        'ecrl;help;task;logs' {
            break
        }
        'ecrl;help;task;stop' {
            break
        }
        'ecrl;help;task;wait' {
            break
        }
        'ecrl;help;service' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a service (ECS CreateService): its tasks start at once')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a service (ECS UpdateService): another revision, count or bounds')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show services: counts, deployments and their rollout, the latest events')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List services, with their counts')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force')
            break
        }
        'ecrl;help;service;create' {
            break
        }
        'ecrl;help;service;update' {
            break
        }
        'ecrl;help;service;describe' {
            break
        }
        'ecrl;help;service;list' {
            break
        }
        'ecrl;help;service;delete' {
            break
        }
        'ecrl;help;logs' {
            break
        }
        'ecrl;help;secret' {
            [CompletionResult]::new('put', 'put', [CompletionResultType]::ParameterValue, 'Store a secret''s value (a new version: the one before stays as AWSPREVIOUS)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a secret''s value')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the secrets'' names and versions (never their values)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a secret')
            break
        }
        'ecrl;help;secret;put' {
            break
        }
        'ecrl;help;secret;get' {
            break
        }
        'ecrl;help;secret;list' {
            break
        }
        'ecrl;help;secret;delete' {
            break
        }
        'ecrl;help;cluster' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a cluster (ECS CreateCluster); creating one that exists shows it')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List clusters (ECS ListClusters), with their task counts')
            [CompletionResult]::new('describe', 'describe', [CompletionResultType]::ParameterValue, 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED')
            break
        }
        'ecrl;help;cluster;create' {
            break
        }
        'ecrl;help;cluster;list' {
            break
        }
        'ecrl;help;cluster;describe' {
            break
        }
        'ecrl;help;cluster;delete' {
            break
        }
        'ecrl;help;auth' {
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Registry users and their access keys')
            [CompletionResult]::new('key', 'key', [CompletionResultType]::ParameterValue, 'Access keys')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Identity policies attached to users (IAM JSON or YAML)')
            [CompletionResult]::new('registry-policy', 'registry-policy', [CompletionResultType]::ParameterValue, 'The registry policy (ECR PutRegistryPolicy): applies to every repository')
            [CompletionResult]::new('simulate', 'simulate', [CompletionResultType]::ParameterValue, 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided')
            break
        }
        'ecrl;help;auth;user' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print its access key id and secret (shown this once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users, their access key ids and policies')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user with its keys and policies; its tokens stop working')
            break
        }
        'ecrl;help;auth;user;create' {
            break
        }
        'ecrl;help;auth;user;list' {
            break
        }
        'ecrl;help;auth;user;delete' {
            break
        }
        'ecrl;help;auth;key' {
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the owner''s access keys (never their secrets)')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an owner access key: it stops working at once')
            break
        }
        'ecrl;help;auth;key;rotate' {
            break
        }
        'ecrl;help;auth;key;create' {
            break
        }
        'ecrl;help;auth;key;list' {
            break
        }
        'ecrl;help;auth;key;delete' {
            break
        }
        'ecrl;help;auth;policy' {
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it')
            [CompletionResult]::new('detach', 'detach', [CompletionResultType]::ParameterValue, 'Detach a user''s policy by name')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s policies (with their documents in --output json)')
            break
        }
        'ecrl;help;auth;policy;attach' {
            break
        }
        'ecrl;help;auth;policy;detach' {
            break
        }
        'ecrl;help;auth;policy;list' {
            break
        }
        'ecrl;help;auth;registry-policy' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the registry policy from a file (- reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print the registry policy')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove the registry policy')
            break
        }
        'ecrl;help;auth;registry-policy;set' {
            break
        }
        'ecrl;help;auth;registry-policy;get' {
            break
        }
        'ecrl;help;auth;registry-policy;delete' {
            break
        }
        'ecrl;help;auth;simulate' {
            break
        }
        'ecrl;help;get-login-password' {
            break
        }
        'ecrl;help;login' {
            break
        }
        'ecrl;help;logout' {
            break
        }
        'ecrl;help;mirror' {
            [CompletionResult]::new('sync', 'sync', [CompletionResultType]::ParameterValue, 'Copy images between this registry and others, or between two others')
            [CompletionResult]::new('jobs', 'jobs', [CompletionResultType]::ParameterValue, 'List the scheduled syncs: last run, result, next run')
            [CompletionResult]::new('job', 'job', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync, or run it now')
            [CompletionResult]::new('replication', 'replication', [CompletionResultType]::ParameterValue, 'Rules that send every pushed image to remote registries, and each image''s status')
            [CompletionResult]::new('cache', 'cache', [CompletionResultType]::ParameterValue, 'Pull-through cache rules: pulls under a prefix answered from an upstream registry')
            break
        }
        'ecrl;help;mirror;sync' {
            break
        }
        'ecrl;help;mirror;jobs' {
            break
        }
        'ecrl;help;mirror;job' {
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a scheduled sync')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run a scheduled sync now (and show its progress)')
            break
        }
        'ecrl;help;mirror;job;rm' {
            break
        }
        'ecrl;help;mirror;job;run' {
            break
        }
        'ecrl;help;mirror;replication' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show the replication rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Remove every replication rule (copies already queued still run)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Where an image was replicated to, and how that went')
            break
        }
        'ecrl;help;mirror;replication;set' {
            break
        }
        'ecrl;help;mirror;replication;get' {
            break
        }
        'ecrl;help;mirror;replication;delete' {
            break
        }
        'ecrl;help;mirror;replication;status' {
            break
        }
        'ecrl;help;mirror;cache' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the rules')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a rule (what it cached stays)')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Reach a rule''s upstream and check its credentials')
            break
        }
        'ecrl;help;mirror;cache;create' {
            break
        }
        'ecrl;help;mirror;cache;list' {
            break
        }
        'ecrl;help;mirror;cache;delete' {
            break
        }
        'ecrl;help;mirror;cache;validate' {
            break
        }
        'ecrl;help;tls' {
            [CompletionResult]::new('ca', 'ca', [CompletionResultType]::ParameterValue, 'Print the path of ecrld''s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry')
            break
        }
        'ecrl;help;tls;ca' {
            break
        }
        'ecrl;help;gc' {
            break
        }
        'ecrl;help;fsck' {
            break
        }
        'ecrl;help;events' {
            break
        }
        'ecrl;help;storage' {
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Move this registry''s blobs into an object store and/or its metadata into PostgreSQL')
            break
        }
        'ecrl;help;storage;migrate' {
            break
        }
        'ecrl;help;completions' {
            break
        }
        'ecrl;help;generate-docs' {
            break
        }
        'ecrl;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
