# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ecrl_global_optspecs
    string join \n output= q/quiet socket= h/help V/version
end

function __fish_ecrl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ecrl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ecrl_using_subcommand
    set -l cmd (__fish_ecrl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ecrl -n "__fish_ecrl_needs_command" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_needs_command" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_needs_command" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_needs_command" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "daemon" -d 'Start, stop and inspect the ecrld daemon'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "repo" -d 'Create, list, describe and delete repositories'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "image" -d 'List, describe, delete and tag images'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "task" -d 'Register, describe, list, deregister and delete ECS task definitions'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "service" -d 'ECS services: a task definition kept running N times, rolled out revision by revision'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "logs" -d 'Print containers\' output by awslogs log group and stream (-f follows)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "secret" -d 'Keep secrets (passwords, keys) that tasks\' `secrets` put in their environment'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "cluster" -d 'Create, list, describe and delete ECS clusters (groups of tasks)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "auth" -d 'Users, access keys, identity and registry policies, and decisions explained'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "get-login-password" -d 'Print a registry password (12 hours) for `docker login -u AWS --password-stdin`'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "login" -d 'Log in to a remote registry (for mirroring), or list the logins'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "logout" -d 'Forget the credentials of a remote registry'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "mirror" -d 'Copy images to and from other registries, on demand, on a schedule, or as they are pushed (replication)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "tls" -d 'Show how clients come to trust the HTTPS registry (ecrld\'s CA)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "gc" -d 'Collect garbage now: blobs and links nothing holds (--dry-run counts them)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "fsck" -d 'Check every blob against its digest and the metadata against the disk (--repair)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "events" -d 'Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "storage" -d 'Move the registry onto the backends several ecrld share (S3 and PostgreSQL)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "generate-docs" -d 'Write completion scripts and man pages into a directory (for packagers and the tests)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "start" -d 'Start ecrld in the background and wait until it answers'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "stop" -d 'Stop ecrld and wait until it is gone'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "status" -d 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "logs" -d 'Print the log of an ecrld started with \'ecrl daemon start\''
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l data-dir -d 'Where blobs and metadata live [default: ~/.local/share/ecrl]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l registry-addr -d 'Address the registry listens on over plain HTTP (port 0 picks a free port; `none` turns plain HTTP off when --tls is on) [default: 127.0.0.1:5000]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l tls -d 'Also serve the registry over HTTPS, on --tls-addr (`--tls=false` turns it off) [default: off]' -r -f -a "true\t''
false\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l tls-addr -d 'Address the HTTPS registry listens on (port 0 picks a free port) [default: 127.0.0.1:5443]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l tls-cert -d 'PEM certificate chain to serve HTTPS with, instead of one from ecrld\'s own CA (needs --tls-key)' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l tls-key -d 'PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l tls-names -d 'Extra DNS names or IP addresses the generated server certificate is valid for, besides localhost, 127.0.0.1 and ::1 (comma-separated)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l metrics-addr -d 'Serve Prometheus metrics at http://HOST:PORT/metrics (alone: on 127.0.0.1:9105; `none` turns them off) [default: off]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l task-endpoint -d 'Where tasks\' containers reach the task metadata endpoint and their task role\'s credentials, IP:PORT (`none` turns it off) [default: 169.254.170.2:80]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l config -d 'YAML config file [default: ~/.config/ecrl/config.yaml when it exists]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l log-format -d 'Log format on stderr [default: text]' -r -f -a "text\t''
json\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l anonymous -d 'What the registry allows without credentials: none, pull (anyone may pull), or all (no registry authentication: throwaway local use only) [default: none]' -r -f -a "none\t'Every request needs credentials'
pull\t'Anyone may pull (and list); pushing and deleting need credentials'
all\t'No registry authentication at all'"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l encryption -d 'Encryption of blobs at rest, chosen when the data dir is created; a data dir keeps its mode, and asking for another one is an error [default: aes256-gcm for a new data dir, else the data dir\'s own]' -r -f -a "aes256-gcm\t'AES-256-GCM in fixed-size authenticated segments, under a master key kept in the OS keyring (or a 0600 key file in the config dir when there is no keyring)'
none\t'Plain bytes (data dirs made before encryption existed are this)'"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l metadata-backend -d 'Where repositories, tags, users, policies and task definitions are kept: sqlite (in the data dir) or postgres (shared by several ecrld; needs --postgres-url) [default: sqlite]' -r -f -a "sqlite\t'SQLite in the data dir: one ecrld'
postgres\t'PostgreSQL: any number of ecrld serve one registry'"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l postgres-url -d 'PostgreSQL connection URL for --metadata-backend postgres, e.g. postgres://ecrl:PASSWORD@db.example:5432/ecrl?sslmode=require' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l postgres-ca -d 'PEM file of the CA that signed PostgreSQL\'s certificate (else the system\'s roots)' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l storage-backend -d 'Where blob content lives: the data dir, or an S3-compatible object store (--s3-*; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN or the config file) [default: filesystem]' -r -f -a "filesystem\t'Files under the data dir'
s3\t'An S3-compatible object store, which several ecrld instances can share'"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l s3-endpoint -d 'The S3 endpoint URL, e.g. http://127.0.0.1:8333 (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l s3-bucket -d 'The bucket blobs are kept in (it must exist)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l s3-prefix -d 'A key prefix within the bucket, so that several registries can share one [default: none]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l s3-region -d 'The bucket\'s region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l s3-addressing -d 'How buckets are addressed: path (http://endpoint/bucket/key) or virtual-host (http://bucket.endpoint/key) [default: path with --s3-endpoint, virtual-host for AWS]' -r -f -a "path\t'`http://endpoint/bucket/key`: what SeaweedFS, Garage and MinIO answer by default'
virtual-host\t'`http://bucket.endpoint/key`: what AWS S3 prefers'"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l wait -d 'Seconds to wait for the daemon to answer' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l wait -d 'Seconds to wait for the daemon to exit' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s n -l tail -d 'Print only the last N lines' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing new lines as they are written'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start ecrld in the background and wait until it answers'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop ecrld and wait until it is gone'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Print the log of an ecrld started with \'ecrl daemon start\''
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "create" -d 'Create a repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "list" -d 'List repositories, optionally those whose name starts with PREFIX'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "describe" -d 'Show a repository: URI, creation time, image count, size'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "delete" -d 'Delete a repository (one that holds images needs --force)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "push" -d 'Push an image from an archive, an OCI layout or the Docker engine into a repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "pull" -d 'Pull an image into an archive, an OCI layout or the Docker engine'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "policy" -d 'Set, print or remove a repository\'s policy (ECR repository policies, IAM JSON)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "lifecycle" -d 'Lifecycle policies (ECR\'s): expire images by tag, count and age, on a schedule'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "tag" -d 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "untag" -d 'Remove resource tags from a repository by key (ECR UntagResource)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "put-mutability" -d 'Change whether tags may move (ECR PutImageTagMutability), with exclusions'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and not __fish_seen_subcommand_from create list describe delete push pull policy lifecycle tag untag put-mutability help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -l tag-mutability -d 'Whether a pushed tag may later point at another image' -r -f -a "MUTABLE\t'Tags may move to other images'
IMMUTABLE\t'A pushed tag stays on its image'
IMMUTABLE_WITH_EXCLUSION\t'Tags stay, except those an --exclude wildcard matches'
MUTABLE_WITH_EXCLUSION\t'Tags may move, except those an --exclude wildcard matches'"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -l exclude -d 'A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. \'latest\' or \'dev-*\' (repeatable, up to 5)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -l tag -d 'A resource tag KEY=VALUE (repeatable)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from list" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from list" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from describe" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from describe" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from describe" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from describe" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from describe" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from delete" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from delete" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from delete" -l force -d 'Delete it even if it holds images'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from push" -l compression -d 'How layers that arrive uncompressed are stored [daemon default: gzip]' -r -f -a "gzip\t''
none\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from push" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from push" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from push" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from push" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from push" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -s o -l output-file -d 'Write the archive to FILE (a directory with --format oci); \'-\' is stdout' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -l format -d 'What to write' -r -f -a "docker-archive\t'A tar as \'docker save\' writes it (\'docker load\' reads it)'
oci\t'An OCI image layout unpacked into a directory (needs -o DIR)'
oci-archive\t'An OCI image layout in a tar'"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -l platform -d 'Which image of a multi-platform index, e.g. linux/arm64' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -l to -d 'Load the image into a local engine instead of writing an archive' -r -f -a "docker\t'The Docker engine the daemon is configured with'"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from pull" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -f -a "set" -d 'Set a repository\'s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -f -a "get" -d 'Print a repository\'s policy'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -f -a "delete" -d 'Remove a repository\'s policy'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from policy" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -f -a "set" -d 'Set a repository\'s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -f -a "get" -d 'Print a repository\'s lifecycle policy'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -f -a "delete" -d 'Remove a repository\'s lifecycle policy'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -f -a "preview" -d 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository\'s own policy, or the one in --file'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -f -a "run" -d 'Apply the repository\'s policy now; prints what it expired'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from lifecycle" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from tag" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from tag" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from tag" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from tag" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from tag" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from untag" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from untag" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from untag" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from untag" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from untag" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -l tag-mutability -d 'Whether a pushed tag may later point at another image' -r -f -a "MUTABLE\t'Tags may move to other images'
IMMUTABLE\t'A pushed tag stays on its image'
IMMUTABLE_WITH_EXCLUSION\t'Tags stay, except those an --exclude wildcard matches'
MUTABLE_WITH_EXCLUSION\t'Tags may move, except those an --exclude wildcard matches'"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -l exclude -d 'A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. \'latest\' or \'dev-*\' (repeatable, up to 5)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from put-mutability" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "list" -d 'List repositories, optionally those whose name starts with PREFIX'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "describe" -d 'Show a repository: URI, creation time, image count, size'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a repository (one that holds images needs --force)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "push" -d 'Push an image from an archive, an OCI layout or the Docker engine into a repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "pull" -d 'Pull an image into an archive, an OCI layout or the Docker engine'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "policy" -d 'Set, print or remove a repository\'s policy (ECR repository policies, IAM JSON)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "lifecycle" -d 'Lifecycle policies (ECR\'s): expire images by tag, count and age, on a schedule'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "tag" -d 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "untag" -d 'Remove resource tags from a repository by key (ECR UntagResource)'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "put-mutability" -d 'Change whether tags may move (ECR PutImageTagMutability), with exclusions'
complete -c ecrl -n "__fish_ecrl_using_subcommand repo; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -f -a "list" -d 'List a repository\'s images (digest and tag pairs)'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -f -a "describe" -d 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -f -a "delete" -d 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -f -a "tag" -d 'Give an existing image another tag'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and not __fish_seen_subcommand_from list describe delete tag help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -l tag-status -d 'Which images to list' -r -f -a "tagged\t''
untagged\t''
any\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -l expiring -d 'Only the images the repository\'s lifecycle policy expires at its next run, with the rule that expires each (see `ecrl repo lifecycle preview` for why others stay)'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from describe" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from describe" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from describe" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from describe" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from describe" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from delete" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from delete" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from tag" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from tag" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from tag" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from tag" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from tag" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "list" -d 'List a repository\'s images (digest and tag pairs)'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "describe" -d 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "tag" -d 'Give an existing image another tag'
complete -c ecrl -n "__fish_ecrl_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "register" -d 'Register a task definition (ECS JSON or YAML) as its family\'s next revision'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "describe" -d 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "list" -d 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "families" -d 'List task definition families'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "deregister" -d 'Deregister a revision: it becomes INACTIVE and can no longer be run'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "delete" -d 'Delete INACTIVE revisions'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "run" -d 'Run tasks of a definition on the local container runtime (ECS RunTask)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "ps" -d 'List tasks, newest first'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "inspect" -d 'Show a task: its state, stop code and reason, containers, exit codes, ports'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "logs" -d 'Print what a task\'s containers wrote (kept after the task stopped)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "stop" -d 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one\'s stopTimeout; returns once it is STOPPED'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "wait" -d 'Wait until a task stops (or runs) and exit with its exit code'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and not __fish_seen_subcommand_from register describe list families deregister delete run ps inspect logs stop wait help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from register" -s f -l file -d 'The task definition: a JSON or YAML file, or - for stdin' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from register" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from register" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from register" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from register" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from register" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from describe" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from describe" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from describe" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from describe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from describe" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -l family-prefix -d 'Only this family\'s revisions (the full family name, as ECS takes it)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -l status -d 'Revisions with this status [default: ACTIVE]' -r -f -a "ACTIVE\t''
INACTIVE\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -l family-prefix -d 'Only families whose name starts with this' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -l status -d 'ACTIVE: families with an ACTIVE revision; INACTIVE: families with none [default: all]' -r -f -a "ACTIVE\t''
INACTIVE\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from families" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from deregister" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from deregister" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from deregister" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from deregister" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from deregister" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from delete" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from delete" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l count -d 'How many tasks to start (1-10), each independent' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -s e -l env -d 'Set an environment variable in one container: CONTAINER.NAME=VALUE (repeatable)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l overrides -d 'RunTask overrides, JSON or YAML as ECS takes them ({"containerOverrides": [...]})' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l started-by -d 'Who started the task (ECS startedBy), for filtering in \'ecrl task ps\'' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l cluster -d 'The cluster to run in (name or ARN; \'ecrl cluster create\' makes one) [default: default]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -l wait -d 'Follow the tasks until they stop and exit with the exit code of the essential container that stopped them (0 when every essential container exited 0)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from run" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l cluster -d 'Only tasks of this cluster (name or ARN) [default: every cluster\'s]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l family -d 'Only tasks of this family' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l status -d 'RUNNING: every task not yet stopped; STOPPED: the stopped ones' -r -f -a "RUNNING\t''
STOPPED\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l started-by -d 'Only tasks started with this --started-by' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l service -d 'Only the tasks of this service' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from ps" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from inspect" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from inspect" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from inspect" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from inspect" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -s c -l container -d 'Only this container\'s output' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing new output until the task stops'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from logs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from stop" -l reason -d 'Why (recorded as the task\'s stoppedReason)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from stop" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from stop" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from stop" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from wait" -l until -d 'The state to wait for: STOPPED exits with the task\'s exit code; RUNNING exits 0 once it runs, 1 if it stopped instead' -r -f -a "RUNNING\t''
STOPPED\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from wait" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from wait" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from wait" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from wait" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from wait" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "register" -d 'Register a task definition (ECS JSON or YAML) as its family\'s next revision'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "describe" -d 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "list" -d 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "families" -d 'List task definition families'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "deregister" -d 'Deregister a revision: it becomes INACTIVE and can no longer be run'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete INACTIVE revisions'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "run" -d 'Run tasks of a definition on the local container runtime (ECS RunTask)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "ps" -d 'List tasks, newest first'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Show a task: its state, stop code and reason, containers, exit codes, ports'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Print what a task\'s containers wrote (kept after the task stopped)'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one\'s stopTimeout; returns once it is STOPPED'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "wait" -d 'Wait until a task stops (or runs) and exit with its exit code'
complete -c ecrl -n "__fish_ecrl_using_subcommand task; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -f -a "create" -d 'Create a service (ECS CreateService): its tasks start at once'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -f -a "update" -d 'Change a service (ECS UpdateService): another revision, count or bounds'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -f -a "describe" -d 'Show services: counts, deployments and their rollout, the latest events'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -f -a "list" -d 'List services, with their counts'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -f -a "delete" -d 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and not __fish_seen_subcommand_from create update describe list delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l task-definition -d 'FAMILY (its latest ACTIVE revision), FAMILY:REVISION or an ARN' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l desired-count -d 'Tasks to keep running [default: 1]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l cluster -d 'The cluster [default: default]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l min-healthy-percent -d 'Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l max-percent -d 'Of the desired count, the most tasks at once during a rollout [default: 200]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l circuit-breaker -d 'The deployment circuit breaker [default: off]' -r -f -a "off\t'No circuit breaker: failing tasks are retried, waiting longer each time'
on\t'A rollout whose tasks keep failing is marked FAILED'
rollback\t'... and the last completed revision is deployed again'"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l health-check-grace-period -d 'Seconds a new task\'s failing health checks are not held against it' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l task-definition -d 'Roll out this revision: FAMILY, FAMILY:REVISION or an ARN' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l desired-count -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l cluster -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l min-healthy-percent -d 'Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l max-percent -d 'Of the desired count, the most tasks at once during a rollout [default: 200]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l circuit-breaker -d 'The deployment circuit breaker [default: off]' -r -f -a "off\t'No circuit breaker: failing tasks are retried, waiting longer each time'
on\t'A rollout whose tasks keep failing is marked FAILED'
rollback\t'... and the last completed revision is deployed again'"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l health-check-grace-period -d 'Seconds a new task\'s failing health checks are not held against it' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -l force-new-deployment -d 'Deploy the same revision again (new tasks replace the running ones)'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from update" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from describe" -l cluster -d 'The cluster [default: default]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from describe" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from describe" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from describe" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from describe" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from describe" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from list" -l cluster -d 'Only this cluster\'s [default: every cluster\'s]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from list" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from list" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -l cluster -r
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -l force -d 'Delete it even though its desired count is above 0'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a service (ECS CreateService): its tasks start at once'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "update" -d 'Change a service (ECS UpdateService): another revision, count or bounds'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "describe" -d 'Show services: counts, deployments and their rollout, the latest events'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "list" -d 'List services, with their counts'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force'
complete -c ecrl -n "__fish_ecrl_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -s f -l follow -d 'Keep printing new output until the tasks stop'
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -l streams -d 'List the group\'s streams instead'
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand logs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -f -a "put" -d 'Store a secret\'s value (a new version: the one before stays as AWSPREVIOUS)'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -f -a "get" -d 'Print a secret\'s value'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -f -a "list" -d 'List the secrets\' names and versions (never their values)'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -f -a "delete" -d 'Delete a secret'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and not __fish_seen_subcommand_from put get list delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -l file -d 'Read the value from a file (as it is)' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -l value-stdin -d 'Read the value from standard input (without a trailing newline)'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from put" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from get" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from get" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from get" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from get" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from list" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from list" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from delete" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from delete" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "put" -d 'Store a secret\'s value (a new version: the one before stays as AWSPREVIOUS)'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "get" -d 'Print a secret\'s value'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the secrets\' names and versions (never their values)'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a secret'
complete -c ecrl -n "__fish_ecrl_using_subcommand secret; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -f -a "create" -d 'Create a cluster (ECS CreateCluster); creating one that exists shows it'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -f -a "list" -d 'List clusters (ECS ListClusters), with their task counts'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -f -a "describe" -d 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -f -a "delete" -d 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and not __fish_seen_subcommand_from create list describe delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from create" -l tag -d 'A resource tag, KEY=VALUE (repeatable)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from create" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from create" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from list" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from list" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from describe" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from describe" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from describe" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from describe" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from describe" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from delete" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from delete" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a cluster (ECS CreateCluster); creating one that exists shows it'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "list" -d 'List clusters (ECS ListClusters), with their task counts'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "describe" -d 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED'
complete -c ecrl -n "__fish_ecrl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -f -a "user" -d 'Registry users and their access keys'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -f -a "key" -d 'Access keys'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -f -a "policy" -d 'Identity policies attached to users (IAM JSON or YAML)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -f -a "registry-policy" -d 'The registry policy (ECR PutRegistryPolicy): applies to every repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -f -a "simulate" -d 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and not __fish_seen_subcommand_from user key policy registry-policy simulate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -f -a "create" -d 'Create a user and print its access key id and secret (shown this once)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -f -a "list" -d 'List users, their access key ids and policies'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -f -a "delete" -d 'Delete a user with its keys and policies; its tokens stop working'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from user" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -f -a "rotate" -d 'Replace a user\'s access key: prints the new secret; the old key and its tokens stop working'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -f -a "create" -d 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -f -a "list" -d 'List the owner\'s access keys (never their secrets)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -f -a "delete" -d 'Delete an owner access key: it stops working at once'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from key" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -f -a "attach" -d 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -f -a "detach" -d 'Detach a user\'s policy by name'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -f -a "list" -d 'List a user\'s policies (with their documents in --output json)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from policy" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -f -a "set" -d 'Set the registry policy from a file (- reads stdin)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -f -a "get" -d 'Print the registry policy'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -f -a "delete" -d 'Remove the registry policy'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from registry-policy" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from simulate" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from simulate" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from simulate" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from simulate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from simulate" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "user" -d 'Registry users and their access keys'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "key" -d 'Access keys'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "policy" -d 'Identity policies attached to users (IAM JSON or YAML)'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "registry-policy" -d 'The registry policy (ECR PutRegistryPolicy): applies to every repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "simulate" -d 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided'
complete -c ecrl -n "__fish_ecrl_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand get-login-password" -l user -d 'A token for this user instead of the registry\'s owner' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand get-login-password" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand get-login-password" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand get-login-password" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand get-login-password" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand get-login-password" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -s u -l username -d 'The user name [asked for on a terminal]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -l password-stdin -d 'Read the password from stdin (a terminal asks for it, unechoed)'
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -l list -d 'List the registries ecrl holds credentials for (never the secrets)'
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand login" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand logout" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand logout" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand logout" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand logout" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand logout" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -f -a "sync" -d 'Copy images between this registry and others, or between two others'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -f -a "jobs" -d 'List the scheduled syncs: last run, result, next run'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -f -a "job" -d 'Remove a scheduled sync, or run it now'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -f -a "replication" -d 'Rules that send every pushed image to remote registries, and each image\'s status'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -f -a "cache" -d 'Pull-through cache rules: pulls under a prefix answered from an upstream registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and not __fish_seen_subcommand_from sync jobs job replication cache help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l tags -d 'The tags of the source repository that match this regular expression (whole tag)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l platform -d 'Only this platform of a multi-platform image (os/arch[/variant]; repeatable)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l jobs -d 'Images copied at once [default: 4]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l every -d 'Make it a job the daemon runs every DURATION (30m, 1h, 1d)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l all-tags -d 'Every tag of the source repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l dry-run -d 'Say what would be copied; copy nothing'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -l no-referrers -d 'Leave out signatures, SBOMs and other images that refer to the copied ones'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from sync" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from jobs" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from jobs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from jobs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from jobs" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from jobs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -f -a "rm" -d 'Remove a scheduled sync'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -f -a "run" -d 'Run a scheduled sync now (and show its progress)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from job" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -f -a "set" -d 'Set the replication rules (JSON or YAML, ECR\'s shape; `-` reads stdin)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -f -a "get" -d 'Show the replication rules'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -f -a "delete" -d 'Remove every replication rule (copies already queued still run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -f -a "status" -d 'Where an image was replicated to, and how that went'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from replication" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -f -a "create" -d 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -f -a "list" -d 'List the rules'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -f -a "delete" -d 'Delete a rule (what it cached stays)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -f -a "validate" -d 'Reach a rule\'s upstream and check its credentials'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from cache" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "sync" -d 'Copy images between this registry and others, or between two others'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "jobs" -d 'List the scheduled syncs: last run, result, next run'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "job" -d 'Remove a scheduled sync, or run it now'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "replication" -d 'Rules that send every pushed image to remote registries, and each image\'s status'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "cache" -d 'Pull-through cache rules: pulls under a prefix answered from an upstream registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -f -a "ca" -d 'Print the path of ecrld\'s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and not __fish_seen_subcommand_from ca help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from ca" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from ca" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from ca" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from ca" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from ca" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from help" -f -a "ca" -d 'Print the path of ecrld\'s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand tls; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand gc" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand gc" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand gc" -l dry-run -d 'Count what would go; remove nothing'
complete -c ecrl -n "__fish_ecrl_using_subcommand gc" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand gc" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand gc" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand fsck" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand fsck" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand fsck" -l repair -d 'Move corrupt blobs to <data dir>/quarantine/, drop links to lost blobs, and mark the images that lost content (their pulls then say so, until pushed again)'
complete -c ecrl -n "__fish_ecrl_using_subcommand fsck" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand fsck" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand fsck" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -l since -d 'Only events newer than this: 90s, 30m, 24h, 7d' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -l type -d 'Only events of these types (repeat it, or separate with commas): image-push, image-delete, replication, cache, repository, policy, gc, task, task-definition' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -l repository -d 'Only the events of one repository' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -s n -l limit -d 'At most this many, the newest [default: 100; at most 1000]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -s f -l follow -d 'Keep printing events as they happen, until interrupted'
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -l webhooks -d 'Show each configured webhook instead: delivered, pending, and the deliveries that failed'
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand events" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -f -a "migrate" -d 'Move this registry\'s blobs into an object store and/or its metadata into PostgreSQL'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and not __fish_seen_subcommand_from migrate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l s3-bucket -d 'The bucket to copy the blobs into (it must exist)' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l s3-endpoint -d 'The S3 endpoint URL (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l s3-prefix -d 'A key prefix within the bucket' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l s3-region -d 'The bucket\'s region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l s3-addressing -d 'How buckets are addressed [default: path with --s3-endpoint, virtual-host for AWS]' -r -f -a "path\t'`http://endpoint/bucket/key`: what SeaweedFS, Garage and MinIO answer by default'
virtual-host\t'`http://bucket.endpoint/key`: what AWS S3 prefers'"
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l postgres-url -d 'The empty PostgreSQL database to copy the metadata into' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l postgres-ca -d 'PEM file of the CA that signed PostgreSQL\'s certificate' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l config -d 'A config file naming the new backends (storage.backend: s3, metadata.backend: postgres)' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from migrate" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Move this registry\'s blobs into an object store and/or its metadata into PostgreSQL'
complete -c ecrl -n "__fish_ecrl_using_subcommand storage; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "daemon" -d 'Start, stop and inspect the ecrld daemon'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "repo" -d 'Create, list, describe and delete repositories'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "image" -d 'List, describe, delete and tag images'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "task" -d 'Register, describe, list, deregister and delete ECS task definitions'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "service" -d 'ECS services: a task definition kept running N times, rolled out revision by revision'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "logs" -d 'Print containers\' output by awslogs log group and stream (-f follows)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "secret" -d 'Keep secrets (passwords, keys) that tasks\' `secrets` put in their environment'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "cluster" -d 'Create, list, describe and delete ECS clusters (groups of tasks)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "auth" -d 'Users, access keys, identity and registry policies, and decisions explained'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "get-login-password" -d 'Print a registry password (12 hours) for `docker login -u AWS --password-stdin`'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "login" -d 'Log in to a remote registry (for mirroring), or list the logins'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "logout" -d 'Forget the credentials of a remote registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "mirror" -d 'Copy images to and from other registries, on demand, on a schedule, or as they are pushed (replication)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "tls" -d 'Show how clients come to trust the HTTPS registry (ecrld\'s CA)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "gc" -d 'Collect garbage now: blobs and links nothing holds (--dry-run counts them)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "fsck" -d 'Check every blob against its digest and the metadata against the disk (--repair)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "events" -d 'Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "storage" -d 'Move the registry onto the backends several ecrld share (S3 and PostgreSQL)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "completions" -d 'Print a shell completion script'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "generate-docs" -d 'Write completion scripts and man pages into a directory (for packagers and the tests)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon repo image task service logs secret cluster auth get-login-password login logout mirror tls gc fsck events storage completions generate-docs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "start" -d 'Start ecrld in the background and wait until it answers'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "stop" -d 'Stop ecrld and wait until it is gone'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "status" -d 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "logs" -d 'Print the log of an ecrld started with \'ecrl daemon start\''
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "create" -d 'Create a repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "list" -d 'List repositories, optionally those whose name starts with PREFIX'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "describe" -d 'Show a repository: URI, creation time, image count, size'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "delete" -d 'Delete a repository (one that holds images needs --force)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "push" -d 'Push an image from an archive, an OCI layout or the Docker engine into a repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "pull" -d 'Pull an image into an archive, an OCI layout or the Docker engine'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "policy" -d 'Set, print or remove a repository\'s policy (ECR repository policies, IAM JSON)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "lifecycle" -d 'Lifecycle policies (ECR\'s): expire images by tag, count and age, on a schedule'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "tag" -d 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "untag" -d 'Remove resource tags from a repository by key (ECR UntagResource)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from repo" -f -a "put-mutability" -d 'Change whether tags may move (ECR PutImageTagMutability), with exclusions'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "list" -d 'List a repository\'s images (digest and tag pairs)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "describe" -d 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "delete" -d 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "tag" -d 'Give an existing image another tag'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "register" -d 'Register a task definition (ECS JSON or YAML) as its family\'s next revision'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "describe" -d 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "list" -d 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "families" -d 'List task definition families'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "deregister" -d 'Deregister a revision: it becomes INACTIVE and can no longer be run'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "delete" -d 'Delete INACTIVE revisions'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "run" -d 'Run tasks of a definition on the local container runtime (ECS RunTask)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "ps" -d 'List tasks, newest first'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "inspect" -d 'Show a task: its state, stop code and reason, containers, exit codes, ports'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "logs" -d 'Print what a task\'s containers wrote (kept after the task stopped)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "stop" -d 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one\'s stopTimeout; returns once it is STOPPED'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from task" -f -a "wait" -d 'Wait until a task stops (or runs) and exit with its exit code'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "create" -d 'Create a service (ECS CreateService): its tasks start at once'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "update" -d 'Change a service (ECS UpdateService): another revision, count or bounds'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "describe" -d 'Show services: counts, deployments and their rollout, the latest events'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "list" -d 'List services, with their counts'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "delete" -d 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "put" -d 'Store a secret\'s value (a new version: the one before stays as AWSPREVIOUS)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "get" -d 'Print a secret\'s value'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "list" -d 'List the secrets\' names and versions (never their values)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from secret" -f -a "delete" -d 'Delete a secret'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "create" -d 'Create a cluster (ECS CreateCluster); creating one that exists shows it'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "list" -d 'List clusters (ECS ListClusters), with their task counts'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "describe" -d 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "delete" -d 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "user" -d 'Registry users and their access keys'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "key" -d 'Access keys'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "policy" -d 'Identity policies attached to users (IAM JSON or YAML)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "registry-policy" -d 'The registry policy (ECR PutRegistryPolicy): applies to every repository'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "simulate" -d 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "sync" -d 'Copy images between this registry and others, or between two others'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "jobs" -d 'List the scheduled syncs: last run, result, next run'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "job" -d 'Remove a scheduled sync, or run it now'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "replication" -d 'Rules that send every pushed image to remote registries, and each image\'s status'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "cache" -d 'Pull-through cache rules: pulls under a prefix answered from an upstream registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from tls" -f -a "ca" -d 'Print the path of ecrld\'s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from storage" -f -a "migrate" -d 'Move this registry\'s blobs into an object store and/or its metadata into PostgreSQL'
