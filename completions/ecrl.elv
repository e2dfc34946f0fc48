
use builtin;
use str;

set edit:completion:arg-completer[ecrl] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'ecrl'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'ecrl'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand daemon 'Start, stop and inspect the ecrld daemon'
            cand repo 'Create, list, describe and delete repositories'
            cand image 'List, describe, delete and tag images'
            cand task 'Register, describe, list, deregister and delete ECS task definitions'
            cand service 'ECS services: a task definition kept running N times, rolled out revision by revision'
            cand logs 'Print containers'' output by awslogs log group and stream (-f follows)'
            cand secret 'Keep secrets (passwords, keys) that tasks'' `secrets` put in their environment'
            cand cluster 'Create, list, describe and delete ECS clusters (groups of tasks)'
            cand auth 'Users, access keys, identity and registry policies, and decisions explained'
            cand get-login-password 'Print a registry password (12 hours) for `docker login -u AWS --password-stdin`'
            cand login 'Log in to a remote registry (for mirroring), or list the logins'
            cand logout 'Forget the credentials of a remote registry'
            cand mirror 'Copy images to and from other registries, on demand, on a schedule, or as they are pushed (replication)'
            cand tls 'Show how clients come to trust the HTTPS registry (ecrld''s CA)'
            cand gc 'Collect garbage now: blobs and links nothing holds (--dry-run counts them)'
            cand fsck 'Check every blob against its digest and the metadata against the disk (--repair)'
            cand events 'Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks'
            cand storage 'Move the registry onto the backends several ecrld share (S3 and PostgreSQL)'
            cand completions 'Print a shell completion script'
            cand generate-docs 'Write completion scripts and man pages into a directory (for packagers and the tests)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;daemon'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand start 'Start ecrld in the background and wait until it answers'
            cand stop 'Stop ecrld and wait until it is gone'
            cand status 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)'
            cand logs 'Print the log of an ecrld started with ''ecrl daemon start'''
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;daemon;start'= {
            cand --data-dir 'Where blobs and metadata live [default: ~/.local/share/ecrl]'
            cand --registry-addr 'Address the registry listens on over plain HTTP (port 0 picks a free port; `none` turns plain HTTP off when --tls is on) [default: 127.0.0.1:5000]'
            cand --tls 'Also serve the registry over HTTPS, on --tls-addr (`--tls=false` turns it off) [default: off]'
            cand --tls-addr 'Address the HTTPS registry listens on (port 0 picks a free port) [default: 127.0.0.1:5443]'
            cand --tls-cert 'PEM certificate chain to serve HTTPS with, instead of one from ecrld''s own CA (needs --tls-key)'
            cand --tls-key 'PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)'
            cand --tls-names 'Extra DNS names or IP addresses the generated server certificate is valid for, besides localhost, 127.0.0.1 and ::1 (comma-separated)'
            cand --metrics-addr 'Serve Prometheus metrics at http://HOST:PORT/metrics (alone: on 127.0.0.1:9105; `none` turns them off) [default: off]'
            cand --task-endpoint 'Where tasks'' containers reach the task metadata endpoint and their task role''s credentials, IP:PORT (`none` turns it off) [default: 169.254.170.2:80]'
            cand --config 'YAML config file [default: ~/.config/ecrl/config.yaml when it exists]'
            cand --log-format 'Log format on stderr [default: text]'
            cand --anonymous 'What the registry allows without credentials: none, pull (anyone may pull), or all (no registry authentication: throwaway local use only) [default: none]'
            cand --encryption 'Encryption of blobs at rest, chosen when the data dir is created; a data dir keeps its mode, and asking for another one is an error [default: aes256-gcm for a new data dir, else the data dir''s own]'
            cand --metadata-backend 'Where repositories, tags, users, policies and task definitions are kept: sqlite (in the data dir) or postgres (shared by several ecrld; needs --postgres-url) [default: sqlite]'
            cand --postgres-url 'PostgreSQL connection URL for --metadata-backend postgres, e.g. postgres://ecrl:PASSWORD@db.example:5432/ecrl?sslmode=require'
            cand --postgres-ca 'PEM file of the CA that signed PostgreSQL''s certificate (else the system''s roots)'
            cand --storage-backend 'Where blob content lives: the data dir, or an S3-compatible object store (--s3-*; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN or the config file) [default: filesystem]'
            cand --s3-endpoint 'The S3 endpoint URL, e.g. http://127.0.0.1:8333 (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]'
            cand --s3-bucket 'The bucket blobs are kept in (it must exist)'
            cand --s3-prefix 'A key prefix within the bucket, so that several registries can share one [default: none]'
            cand --s3-region 'The bucket''s region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]'
            cand --s3-addressing 'How buckets are addressed: path (http://endpoint/bucket/key) or virtual-host (http://bucket.endpoint/key) [default: path with --s3-endpoint, virtual-host for AWS]'
            cand --wait 'Seconds to wait for the daemon to answer'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;daemon;stop'= {
            cand --wait 'Seconds to wait for the daemon to exit'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;daemon;status'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;daemon;logs'= {
            cand -n 'Print only the last N lines'
            cand --tail 'Print only the last N lines'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -f 'Keep printing new lines as they are written'
            cand --follow 'Keep printing new lines as they are written'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;daemon;help'= {
            cand start 'Start ecrld in the background and wait until it answers'
            cand stop 'Stop ecrld and wait until it is gone'
            cand status 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)'
            cand logs 'Print the log of an ecrld started with ''ecrl daemon start'''
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;daemon;help;start'= {
        }
        &'ecrl;daemon;help;stop'= {
        }
        &'ecrl;daemon;help;status'= {
        }
        &'ecrl;daemon;help;logs'= {
        }
        &'ecrl;daemon;help;help'= {
        }
        &'ecrl;repo'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Create a repository'
            cand list 'List repositories, optionally those whose name starts with PREFIX'
            cand describe 'Show a repository: URI, creation time, image count, size'
            cand delete 'Delete a repository (one that holds images needs --force)'
            cand push 'Push an image from an archive, an OCI layout or the Docker engine into a repository'
            cand pull 'Pull an image into an archive, an OCI layout or the Docker engine'
            cand policy 'Set, print or remove a repository''s policy (ECR repository policies, IAM JSON)'
            cand lifecycle 'Lifecycle policies (ECR''s): expire images by tag, count and age, on a schedule'
            cand tag 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value'
            cand untag 'Remove resource tags from a repository by key (ECR UntagResource)'
            cand put-mutability 'Change whether tags may move (ECR PutImageTagMutability), with exclusions'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;create'= {
            cand --tag-mutability 'Whether a pushed tag may later point at another image'
            cand --exclude 'A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. ''latest'' or ''dev-*'' (repeatable, up to 5)'
            cand --tag 'A resource tag KEY=VALUE (repeatable)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;describe'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --force 'Delete it even if it holds images'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;push'= {
            cand --compression 'How layers that arrive uncompressed are stored [daemon default: gzip]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;pull'= {
            cand -o 'Write the archive to FILE (a directory with --format oci); ''-'' is stdout'
            cand --output-file 'Write the archive to FILE (a directory with --format oci); ''-'' is stdout'
            cand --format 'What to write'
            cand --platform 'Which image of a multi-platform index, e.g. linux/arm64'
            cand --to 'Load the image into a local engine instead of writing an archive'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;policy'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)'
            cand get 'Print a repository''s policy'
            cand delete 'Remove a repository''s policy'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;policy;set'= {
            cand -f 'f'
            cand --file 'file'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;policy;get'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;policy;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;policy;help'= {
            cand set 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)'
            cand get 'Print a repository''s policy'
            cand delete 'Remove a repository''s policy'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;policy;help;set'= {
        }
        &'ecrl;repo;policy;help;get'= {
        }
        &'ecrl;repo;policy;help;delete'= {
        }
        &'ecrl;repo;policy;help;help'= {
        }
        &'ecrl;repo;lifecycle'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)'
            cand get 'Print a repository''s lifecycle policy'
            cand delete 'Remove a repository''s lifecycle policy'
            cand preview 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file'
            cand run 'Apply the repository''s policy now; prints what it expired'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;lifecycle;set'= {
            cand -f 'f'
            cand --file 'file'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;lifecycle;get'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;lifecycle;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;lifecycle;preview'= {
            cand -f 'f'
            cand --file 'file'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;lifecycle;run'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;lifecycle;help'= {
            cand set 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)'
            cand get 'Print a repository''s lifecycle policy'
            cand delete 'Remove a repository''s lifecycle policy'
            cand preview 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file'
            cand run 'Apply the repository''s policy now; prints what it expired'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;lifecycle;help;set'= {
        }
        &'ecrl;repo;lifecycle;help;get'= {
        }
        &'ecrl;repo;lifecycle;help;delete'= {
        }
        &'ecrl;repo;lifecycle;help;preview'= {
        }
        &'ecrl;repo;lifecycle;help;run'= {
        }
        &'ecrl;repo;lifecycle;help;help'= {
        }
        &'ecrl;repo;tag'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;untag'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;put-mutability'= {
            cand --tag-mutability 'Whether a pushed tag may later point at another image'
            cand --exclude 'A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. ''latest'' or ''dev-*'' (repeatable, up to 5)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;help'= {
            cand create 'Create a repository'
            cand list 'List repositories, optionally those whose name starts with PREFIX'
            cand describe 'Show a repository: URI, creation time, image count, size'
            cand delete 'Delete a repository (one that holds images needs --force)'
            cand push 'Push an image from an archive, an OCI layout or the Docker engine into a repository'
            cand pull 'Pull an image into an archive, an OCI layout or the Docker engine'
            cand policy 'Set, print or remove a repository''s policy (ECR repository policies, IAM JSON)'
            cand lifecycle 'Lifecycle policies (ECR''s): expire images by tag, count and age, on a schedule'
            cand tag 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value'
            cand untag 'Remove resource tags from a repository by key (ECR UntagResource)'
            cand put-mutability 'Change whether tags may move (ECR PutImageTagMutability), with exclusions'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;help;create'= {
        }
        &'ecrl;repo;help;list'= {
        }
        &'ecrl;repo;help;describe'= {
        }
        &'ecrl;repo;help;delete'= {
        }
        &'ecrl;repo;help;push'= {
        }
        &'ecrl;repo;help;pull'= {
        }
        &'ecrl;repo;help;policy'= {
            cand set 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)'
            cand get 'Print a repository''s policy'
            cand delete 'Remove a repository''s policy'
        }
        &'ecrl;repo;help;policy;set'= {
        }
        &'ecrl;repo;help;policy;get'= {
        }
        &'ecrl;repo;help;policy;delete'= {
        }
        &'ecrl;repo;help;lifecycle'= {
            cand set 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)'
            cand get 'Print a repository''s lifecycle policy'
            cand delete 'Remove a repository''s lifecycle policy'
            cand preview 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file'
            cand run 'Apply the repository''s policy now; prints what it expired'
        }
        &'ecrl;repo;help;lifecycle;set'= {
        }
        &'ecrl;repo;help;lifecycle;get'= {
        }
        &'ecrl;repo;help;lifecycle;delete'= {
        }
        &'ecrl;repo;help;lifecycle;preview'= {
        }
        &'ecrl;repo;help;lifecycle;run'= {
        }
        &'ecrl;repo;help;tag'= {
        }
        &'ecrl;repo;help;untag'= {
        }
        &'ecrl;repo;help;put-mutability'= {
        }
        &'ecrl;repo;help;help'= {
        }
        &'ecrl;image'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List a repository''s images (digest and tag pairs)'
            cand describe 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO'
            cand delete 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags'
            cand tag 'Give an existing image another tag'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;image;list'= {
            cand --tag-status 'Which images to list'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --expiring 'Only the images the repository''s lifecycle policy expires at its next run, with the rule that expires each (see `ecrl repo lifecycle preview` for why others stay)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;image;describe'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;image;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;image;tag'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;image;help'= {
            cand list 'List a repository''s images (digest and tag pairs)'
            cand describe 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO'
            cand delete 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags'
            cand tag 'Give an existing image another tag'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;image;help;list'= {
        }
        &'ecrl;image;help;describe'= {
        }
        &'ecrl;image;help;delete'= {
        }
        &'ecrl;image;help;tag'= {
        }
        &'ecrl;image;help;help'= {
        }
        &'ecrl;task'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand register 'Register a task definition (ECS JSON or YAML) as its family''s next revision'
            cand describe 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN'
            cand list 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)'
            cand families 'List task definition families'
            cand deregister 'Deregister a revision: it becomes INACTIVE and can no longer be run'
            cand delete 'Delete INACTIVE revisions'
            cand run 'Run tasks of a definition on the local container runtime (ECS RunTask)'
            cand ps 'List tasks, newest first'
            cand inspect 'Show a task: its state, stop code and reason, containers, exit codes, ports'
            cand logs 'Print what a task''s containers wrote (kept after the task stopped)'
            cand stop 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one''s stopTimeout; returns once it is STOPPED'
            cand wait 'Wait until a task stops (or runs) and exit with its exit code'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;task;register'= {
            cand -f 'The task definition: a JSON or YAML file, or - for stdin'
            cand --file 'The task definition: a JSON or YAML file, or - for stdin'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;describe'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;list'= {
            cand --family-prefix 'Only this family''s revisions (the full family name, as ECS takes it)'
            cand --status 'Revisions with this status [default: ACTIVE]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;families'= {
            cand --family-prefix 'Only families whose name starts with this'
            cand --status 'ACTIVE: families with an ACTIVE revision; INACTIVE: families with none [default: all]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;deregister'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;run'= {
            cand --count 'How many tasks to start (1-10), each independent'
            cand -e 'Set an environment variable in one container: CONTAINER.NAME=VALUE (repeatable)'
            cand --env 'Set an environment variable in one container: CONTAINER.NAME=VALUE (repeatable)'
            cand --overrides 'RunTask overrides, JSON or YAML as ECS takes them ({"containerOverrides": [...]})'
            cand --started-by 'Who started the task (ECS startedBy), for filtering in ''ecrl task ps'''
            cand --cluster 'The cluster to run in (name or ARN; ''ecrl cluster create'' makes one) [default: default]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --wait 'Follow the tasks until they stop and exit with the exit code of the essential container that stopped them (0 when every essential container exited 0)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;ps'= {
            cand --cluster 'Only tasks of this cluster (name or ARN) [default: every cluster''s]'
            cand --family 'Only tasks of this family'
            cand --status 'RUNNING: every task not yet stopped; STOPPED: the stopped ones'
            cand --started-by 'Only tasks started with this --started-by'
            cand --service 'Only the tasks of this service'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;inspect'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;logs'= {
            cand -c 'Only this container''s output'
            cand --container 'Only this container''s output'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -f 'Keep printing new output until the task stops'
            cand --follow 'Keep printing new output until the task stops'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;stop'= {
            cand --reason 'Why (recorded as the task''s stoppedReason)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;wait'= {
            cand --until 'The state to wait for: STOPPED exits with the task''s exit code; RUNNING exits 0 once it runs, 1 if it stopped instead'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;task;help'= {
            cand register 'Register a task definition (ECS JSON or YAML) as its family''s next revision'
            cand describe 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN'
            cand list 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)'
            cand families 'List task definition families'
            cand deregister 'Deregister a revision: it becomes INACTIVE and can no longer be run'
            cand delete 'Delete INACTIVE revisions'
            cand run 'Run tasks of a definition on the local container runtime (ECS RunTask)'
            cand ps 'List tasks, newest first'
            cand inspect 'Show a task: its state, stop code and reason, containers, exit codes, ports'
            cand logs 'Print what a task''s containers wrote (kept after the task stopped)'
            cand stop 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one''s stopTimeout; returns once it is STOPPED'
            cand wait 'Wait until a task stops (or runs) and exit with its exit code'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;task;help;register'= {
        }
        &'ecrl;task;help;describe'= {
        }
        &'ecrl;task;help;list'= {
        }
        &'ecrl;task;help;families'= {
        }
        &'ecrl;task;help;deregister'= {
        }
        &'ecrl;task;help;delete'= {
        }
        &'ecrl;task;help;run'= {
        }
        &'ecrl;task;help;ps'= {
        }
        &'ecrl;task;help;inspect'= {
        }
        &'ecrl;task;help;logs'= {
        }
        &'ecrl;task;help;stop'= {
        }
        &'ecrl;task;help;wait'= {
        }
        &'ecrl;task;help;help'= {
        }
        &'ecrl;service'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Create a service (ECS CreateService): its tasks start at once'
            cand update 'Change a service (ECS UpdateService): another revision, count or bounds'
            cand describe 'Show services: counts, deployments and their rollout, the latest events'
            cand list 'List services, with their counts'
            cand delete 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;service;create'= {
            cand --task-definition 'FAMILY (its latest ACTIVE revision), FAMILY:REVISION or an ARN'
            cand --desired-count 'Tasks to keep running [default: 1]'
            cand --cluster 'The cluster [default: default]'
            cand --min-healthy-percent 'Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]'
            cand --max-percent 'Of the desired count, the most tasks at once during a rollout [default: 200]'
            cand --circuit-breaker 'The deployment circuit breaker [default: off]'
            cand --health-check-grace-period 'Seconds a new task''s failing health checks are not held against it'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;service;update'= {
            cand --task-definition 'Roll out this revision: FAMILY, FAMILY:REVISION or an ARN'
            cand --desired-count 'desired-count'
            cand --cluster 'cluster'
            cand --min-healthy-percent 'Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]'
            cand --max-percent 'Of the desired count, the most tasks at once during a rollout [default: 200]'
            cand --circuit-breaker 'The deployment circuit breaker [default: off]'
            cand --health-check-grace-period 'Seconds a new task''s failing health checks are not held against it'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --force-new-deployment 'Deploy the same revision again (new tasks replace the running ones)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;service;describe'= {
            cand --cluster 'The cluster [default: default]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;service;list'= {
            cand --cluster 'Only this cluster''s [default: every cluster''s]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;service;delete'= {
            cand --cluster 'cluster'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --force 'Delete it even though its desired count is above 0'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;service;help'= {
            cand create 'Create a service (ECS CreateService): its tasks start at once'
            cand update 'Change a service (ECS UpdateService): another revision, count or bounds'
            cand describe 'Show services: counts, deployments and their rollout, the latest events'
            cand list 'List services, with their counts'
            cand delete 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;service;help;create'= {
        }
        &'ecrl;service;help;update'= {
        }
        &'ecrl;service;help;describe'= {
        }
        &'ecrl;service;help;list'= {
        }
        &'ecrl;service;help;delete'= {
        }
        &'ecrl;service;help;help'= {
        }
        &'ecrl;logs'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -f 'Keep printing new output until the tasks stop'
            cand --follow 'Keep printing new output until the tasks stop'
            cand --streams 'List the group''s streams instead'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;secret'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand put 'Store a secret''s value (a new version: the one before stays as AWSPREVIOUS)'
            cand get 'Print a secret''s value'
            cand list 'List the secrets'' names and versions (never their values)'
            cand delete 'Delete a secret'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;secret;put'= {
            cand --file 'Read the value from a file (as it is)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --value-stdin 'Read the value from standard input (without a trailing newline)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;secret;get'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;secret;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;secret;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;secret;help'= {
            cand put 'Store a secret''s value (a new version: the one before stays as AWSPREVIOUS)'
            cand get 'Print a secret''s value'
            cand list 'List the secrets'' names and versions (never their values)'
            cand delete 'Delete a secret'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;secret;help;put'= {
        }
        &'ecrl;secret;help;get'= {
        }
        &'ecrl;secret;help;list'= {
        }
        &'ecrl;secret;help;delete'= {
        }
        &'ecrl;secret;help;help'= {
        }
        &'ecrl;cluster'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Create a cluster (ECS CreateCluster); creating one that exists shows it'
            cand list 'List clusters (ECS ListClusters), with their task counts'
            cand describe 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags'
            cand delete 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;cluster;create'= {
            cand --tag 'A resource tag, KEY=VALUE (repeatable)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;cluster;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;cluster;describe'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;cluster;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;cluster;help'= {
            cand create 'Create a cluster (ECS CreateCluster); creating one that exists shows it'
            cand list 'List clusters (ECS ListClusters), with their task counts'
            cand describe 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags'
            cand delete 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;cluster;help;create'= {
        }
        &'ecrl;cluster;help;list'= {
        }
        &'ecrl;cluster;help;describe'= {
        }
        &'ecrl;cluster;help;delete'= {
        }
        &'ecrl;cluster;help;help'= {
        }
        &'ecrl;auth'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand user 'Registry users and their access keys'
            cand key 'Access keys'
            cand policy 'Identity policies attached to users (IAM JSON or YAML)'
            cand registry-policy 'The registry policy (ECR PutRegistryPolicy): applies to every repository'
            cand simulate 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;user'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Create a user and print its access key id and secret (shown this once)'
            cand list 'List users, their access key ids and policies'
            cand delete 'Delete a user with its keys and policies; its tokens stop working'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;user;create'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;user;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;user;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;user;help'= {
            cand create 'Create a user and print its access key id and secret (shown this once)'
            cand list 'List users, their access key ids and policies'
            cand delete 'Delete a user with its keys and policies; its tokens stop working'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;user;help;create'= {
        }
        &'ecrl;auth;user;help;list'= {
        }
        &'ecrl;auth;user;help;delete'= {
        }
        &'ecrl;auth;user;help;help'= {
        }
        &'ecrl;auth;key'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand rotate 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working'
            cand create 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once'
            cand list 'List the owner''s access keys (never their secrets)'
            cand delete 'Delete an owner access key: it stops working at once'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;key;rotate'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;key;create'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;key;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;key;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;key;help'= {
            cand rotate 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working'
            cand create 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once'
            cand list 'List the owner''s access keys (never their secrets)'
            cand delete 'Delete an owner access key: it stops working at once'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;key;help;rotate'= {
        }
        &'ecrl;auth;key;help;create'= {
        }
        &'ecrl;auth;key;help;list'= {
        }
        &'ecrl;auth;key;help;delete'= {
        }
        &'ecrl;auth;key;help;help'= {
        }
        &'ecrl;auth;policy'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand attach 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it'
            cand detach 'Detach a user''s policy by name'
            cand list 'List a user''s policies (with their documents in --output json)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;policy;attach'= {
            cand --name 'The policy''s name'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;policy;detach'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;policy;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;policy;help'= {
            cand attach 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it'
            cand detach 'Detach a user''s policy by name'
            cand list 'List a user''s policies (with their documents in --output json)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;policy;help;attach'= {
        }
        &'ecrl;auth;policy;help;detach'= {
        }
        &'ecrl;auth;policy;help;list'= {
        }
        &'ecrl;auth;policy;help;help'= {
        }
        &'ecrl;auth;registry-policy'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Set the registry policy from a file (- reads stdin)'
            cand get 'Print the registry policy'
            cand delete 'Remove the registry policy'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;registry-policy;set'= {
            cand -f 'f'
            cand --file 'file'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;registry-policy;get'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;registry-policy;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;registry-policy;help'= {
            cand set 'Set the registry policy from a file (- reads stdin)'
            cand get 'Print the registry policy'
            cand delete 'Remove the registry policy'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;registry-policy;help;set'= {
        }
        &'ecrl;auth;registry-policy;help;get'= {
        }
        &'ecrl;auth;registry-policy;help;delete'= {
        }
        &'ecrl;auth;registry-policy;help;help'= {
        }
        &'ecrl;auth;simulate'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;auth;help'= {
            cand user 'Registry users and their access keys'
            cand key 'Access keys'
            cand policy 'Identity policies attached to users (IAM JSON or YAML)'
            cand registry-policy 'The registry policy (ECR PutRegistryPolicy): applies to every repository'
            cand simulate 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;auth;help;user'= {
            cand create 'Create a user and print its access key id and secret (shown this once)'
            cand list 'List users, their access key ids and policies'
            cand delete 'Delete a user with its keys and policies; its tokens stop working'
        }
        &'ecrl;auth;help;user;create'= {
        }
        &'ecrl;auth;help;user;list'= {
        }
        &'ecrl;auth;help;user;delete'= {
        }
        &'ecrl;auth;help;key'= {
            cand rotate 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working'
            cand create 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once'
            cand list 'List the owner''s access keys (never their secrets)'
            cand delete 'Delete an owner access key: it stops working at once'
        }
        &'ecrl;auth;help;key;rotate'= {
        }
        &'ecrl;auth;help;key;create'= {
        }
        &'ecrl;auth;help;key;list'= {
        }
        &'ecrl;auth;help;key;delete'= {
        }
        &'ecrl;auth;help;policy'= {
            cand attach 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it'
            cand detach 'Detach a user''s policy by name'
            cand list 'List a user''s policies (with their documents in --output json)'
        }
        &'ecrl;auth;help;policy;attach'= {
        }
        &'ecrl;auth;help;policy;detach'= {
        }
        &'ecrl;auth;help;policy;list'= {
        }
        &'ecrl;auth;help;registry-policy'= {
            cand set 'Set the registry policy from a file (- reads stdin)'
            cand get 'Print the registry policy'
            cand delete 'Remove the registry policy'
        }
        &'ecrl;auth;help;registry-policy;set'= {
        }
        &'ecrl;auth;help;registry-policy;get'= {
        }
        &'ecrl;auth;help;registry-policy;delete'= {
        }
        &'ecrl;auth;help;simulate'= {
        }
        &'ecrl;auth;help;help'= {
        }
        &'ecrl;get-login-password'= {
            cand --user 'A token for this user instead of the registry''s owner'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;login'= {
            cand -u 'The user name [asked for on a terminal]'
            cand --username 'The user name [asked for on a terminal]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --password-stdin 'Read the password from stdin (a terminal asks for it, unechoed)'
            cand --list 'List the registries ecrl holds credentials for (never the secrets)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;logout'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand sync 'Copy images between this registry and others, or between two others'
            cand jobs 'List the scheduled syncs: last run, result, next run'
            cand job 'Remove a scheduled sync, or run it now'
            cand replication 'Rules that send every pushed image to remote registries, and each image''s status'
            cand cache 'Pull-through cache rules: pulls under a prefix answered from an upstream registry'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;sync'= {
            cand --tags 'The tags of the source repository that match this regular expression (whole tag)'
            cand --platform 'Only this platform of a multi-platform image (os/arch[/variant]; repeatable)'
            cand --jobs 'Images copied at once [default: 4]'
            cand --every 'Make it a job the daemon runs every DURATION (30m, 1h, 1d)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --all-tags 'Every tag of the source repository'
            cand --dry-run 'Say what would be copied; copy nothing'
            cand --no-referrers 'Leave out signatures, SBOMs and other images that refer to the copied ones'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;jobs'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;job'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand rm 'Remove a scheduled sync'
            cand run 'Run a scheduled sync now (and show its progress)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;job;rm'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;job;run'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;job;help'= {
            cand rm 'Remove a scheduled sync'
            cand run 'Run a scheduled sync now (and show its progress)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;job;help;rm'= {
        }
        &'ecrl;mirror;job;help;run'= {
        }
        &'ecrl;mirror;job;help;help'= {
        }
        &'ecrl;mirror;replication'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)'
            cand get 'Show the replication rules'
            cand delete 'Remove every replication rule (copies already queued still run)'
            cand status 'Where an image was replicated to, and how that went'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;replication;set'= {
            cand -f 'f'
            cand --file 'file'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;replication;get'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;replication;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;replication;status'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;replication;help'= {
            cand set 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)'
            cand get 'Show the replication rules'
            cand delete 'Remove every replication rule (copies already queued still run)'
            cand status 'Where an image was replicated to, and how that went'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;replication;help;set'= {
        }
        &'ecrl;mirror;replication;help;get'= {
        }
        &'ecrl;mirror;replication;help;delete'= {
        }
        &'ecrl;mirror;replication;help;status'= {
        }
        &'ecrl;mirror;replication;help;help'= {
        }
        &'ecrl;mirror;cache'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here'
            cand list 'List the rules'
            cand delete 'Delete a rule (what it cached stays)'
            cand validate 'Reach a rule''s upstream and check its credentials'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;cache;create'= {
            cand --upstream-prefix 'Put before each repository''s name upstream'
            cand --login 'Use the credentials kept for this registry name (default: the upstream''s)'
            cand --tag-ttl 'How long a cached tag is served before it is checked upstream again [default: 24h]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --docker-hub-mirror 'Also answer docker''s registry-mirrors (Docker Hub names without the prefix)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;cache;list'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;cache;delete'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;cache;validate'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;mirror;cache;help'= {
            cand create 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here'
            cand list 'List the rules'
            cand delete 'Delete a rule (what it cached stays)'
            cand validate 'Reach a rule''s upstream and check its credentials'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;cache;help;create'= {
        }
        &'ecrl;mirror;cache;help;list'= {
        }
        &'ecrl;mirror;cache;help;delete'= {
        }
        &'ecrl;mirror;cache;help;validate'= {
        }
        &'ecrl;mirror;cache;help;help'= {
        }
        &'ecrl;mirror;help'= {
            cand sync 'Copy images between this registry and others, or between two others'
            cand jobs 'List the scheduled syncs: last run, result, next run'
            cand job 'Remove a scheduled sync, or run it now'
            cand replication 'Rules that send every pushed image to remote registries, and each image''s status'
            cand cache 'Pull-through cache rules: pulls under a prefix answered from an upstream registry'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;mirror;help;sync'= {
        }
        &'ecrl;mirror;help;jobs'= {
        }
        &'ecrl;mirror;help;job'= {
            cand rm 'Remove a scheduled sync'
            cand run 'Run a scheduled sync now (and show its progress)'
        }
        &'ecrl;mirror;help;job;rm'= {
        }
        &'ecrl;mirror;help;job;run'= {
        }
        &'ecrl;mirror;help;replication'= {
            cand set 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)'
            cand get 'Show the replication rules'
            cand delete 'Remove every replication rule (copies already queued still run)'
            cand status 'Where an image was replicated to, and how that went'
        }
        &'ecrl;mirror;help;replication;set'= {
        }
        &'ecrl;mirror;help;replication;get'= {
        }
        &'ecrl;mirror;help;replication;delete'= {
        }
        &'ecrl;mirror;help;replication;status'= {
        }
        &'ecrl;mirror;help;cache'= {
            cand create 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here'
            cand list 'List the rules'
            cand delete 'Delete a rule (what it cached stays)'
            cand validate 'Reach a rule''s upstream and check its credentials'
        }
        &'ecrl;mirror;help;cache;create'= {
        }
        &'ecrl;mirror;help;cache;list'= {
        }
        &'ecrl;mirror;help;cache;delete'= {
        }
        &'ecrl;mirror;help;cache;validate'= {
        }
        &'ecrl;mirror;help;help'= {
        }
        &'ecrl;tls'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand ca 'Print the path of ecrld''s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;tls;ca'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;tls;help'= {
            cand ca 'Print the path of ecrld''s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;tls;help;ca'= {
        }
        &'ecrl;tls;help;help'= {
        }
        &'ecrl;gc'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --dry-run 'Count what would go; remove nothing'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;fsck'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand --repair 'Move corrupt blobs to <data dir>/quarantine/, drop links to lost blobs, and mark the images that lost content (their pulls then say so, until pushed again)'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;events'= {
            cand --since 'Only events newer than this: 90s, 30m, 24h, 7d'
            cand --type 'Only events of these types (repeat it, or separate with commas): image-push, image-delete, replication, cache, repository, policy, gc, task, task-definition'
            cand --repository 'Only the events of one repository'
            cand -n 'At most this many, the newest [default: 100; at most 1000]'
            cand --limit 'At most this many, the newest [default: 100; at most 1000]'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -f 'Keep printing events as they happen, until interrupted'
            cand --follow 'Keep printing events as they happen, until interrupted'
            cand --webhooks 'Show each configured webhook instead: delivered, pending, and the deliveries that failed'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;storage'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand migrate 'Move this registry''s blobs into an object store and/or its metadata into PostgreSQL'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;storage;migrate'= {
            cand --s3-bucket 'The bucket to copy the blobs into (it must exist)'
            cand --s3-endpoint 'The S3 endpoint URL (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]'
            cand --s3-prefix 'A key prefix within the bucket'
            cand --s3-region 'The bucket''s region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]'
            cand --s3-addressing 'How buckets are addressed [default: path with --s3-endpoint, virtual-host for AWS]'
            cand --postgres-url 'The empty PostgreSQL database to copy the metadata into'
            cand --postgres-ca 'PEM file of the CA that signed PostgreSQL''s certificate'
            cand --config 'A config file naming the new backends (storage.backend: s3, metadata.backend: postgres)'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;storage;help'= {
            cand migrate 'Move this registry''s blobs into an object store and/or its metadata into PostgreSQL'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;storage;help;migrate'= {
        }
        &'ecrl;storage;help;help'= {
        }
        &'ecrl;completions'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;generate-docs'= {
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;help'= {
            cand daemon 'Start, stop and inspect the ecrld daemon'
            cand repo 'Create, list, describe and delete repositories'
            cand image 'List, describe, delete and tag images'
            cand task 'Register, describe, list, deregister and delete ECS task definitions'
            cand service 'ECS services: a task definition kept running N times, rolled out revision by revision'
            cand logs 'Print containers'' output by awslogs log group and stream (-f follows)'
            cand secret 'Keep secrets (passwords, keys) that tasks'' `secrets` put in their environment'
            cand cluster 'Create, list, describe and delete ECS clusters (groups of tasks)'
            cand auth 'Users, access keys, identity and registry policies, and decisions explained'
            cand get-login-password 'Print a registry password (12 hours) for `docker login -u AWS --password-stdin`'
            cand login 'Log in to a remote registry (for mirroring), or list the logins'
            cand logout 'Forget the credentials of a remote registry'
            cand mirror 'Copy images to and from other registries, on demand, on a schedule, or as they are pushed (replication)'
            cand tls 'Show how clients come to trust the HTTPS registry (ecrld''s CA)'
            cand gc 'Collect garbage now: blobs and links nothing holds (--dry-run counts them)'
            cand fsck 'Check every blob against its digest and the metadata against the disk (--repair)'
            cand events 'Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks'
            cand storage 'Move the registry onto the backends several ecrld share (S3 and PostgreSQL)'
            cand completions 'Print a shell completion script'
            cand generate-docs 'Write completion scripts and man pages into a directory (for packagers and the tests)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;help;daemon'= {
            cand start 'Start ecrld in the background and wait until it answers'
            cand stop 'Stop ecrld and wait until it is gone'
            cand status 'Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on (exit 3 when it does not run)'
            cand logs 'Print the log of an ecrld started with ''ecrl daemon start'''
        }
        &'ecrl;help;daemon;start'= {
        }
        &'ecrl;help;daemon;stop'= {
        }
        &'ecrl;help;daemon;status'= {
        }
        &'ecrl;help;daemon;logs'= {
        }
        &'ecrl;help;repo'= {
            cand create 'Create a repository'
            cand list 'List repositories, optionally those whose name starts with PREFIX'
            cand describe 'Show a repository: URI, creation time, image count, size'
            cand delete 'Delete a repository (one that holds images needs --force)'
            cand push 'Push an image from an archive, an OCI layout or the Docker engine into a repository'
            cand pull 'Pull an image into an archive, an OCI layout or the Docker engine'
            cand policy 'Set, print or remove a repository''s policy (ECR repository policies, IAM JSON)'
            cand lifecycle 'Lifecycle policies (ECR''s): expire images by tag, count and age, on a schedule'
            cand tag 'Add resource tags to a repository (ECR TagResource); a key given again takes the new value'
            cand untag 'Remove resource tags from a repository by key (ECR UntagResource)'
            cand put-mutability 'Change whether tags may move (ECR PutImageTagMutability), with exclusions'
        }
        &'ecrl;help;repo;create'= {
        }
        &'ecrl;help;repo;list'= {
        }
        &'ecrl;help;repo;describe'= {
        }
        &'ecrl;help;repo;delete'= {
        }
        &'ecrl;help;repo;push'= {
        }
        &'ecrl;help;repo;pull'= {
        }
        &'ecrl;help;repo;policy'= {
            cand set 'Set a repository''s policy (ECR SetRepositoryPolicy) from a file (- reads stdin)'
            cand get 'Print a repository''s policy'
            cand delete 'Remove a repository''s policy'
        }
        &'ecrl;help;repo;policy;set'= {
        }
        &'ecrl;help;repo;policy;get'= {
        }
        &'ecrl;help;repo;policy;delete'= {
        }
        &'ecrl;help;repo;lifecycle'= {
            cand set 'Set a repository''s lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file (- reads stdin); the daemon applies it every lifecycle.interval (1h)'
            cand get 'Print a repository''s lifecycle policy'
            cand delete 'Remove a repository''s lifecycle policy'
            cand preview 'What a policy would expire now, rule by rule, and what it keeps because tasks use it; nothing is deleted. The repository''s own policy, or the one in --file'
            cand run 'Apply the repository''s policy now; prints what it expired'
        }
        &'ecrl;help;repo;lifecycle;set'= {
        }
        &'ecrl;help;repo;lifecycle;get'= {
        }
        &'ecrl;help;repo;lifecycle;delete'= {
        }
        &'ecrl;help;repo;lifecycle;preview'= {
        }
        &'ecrl;help;repo;lifecycle;run'= {
        }
        &'ecrl;help;repo;tag'= {
        }
        &'ecrl;help;repo;untag'= {
        }
        &'ecrl;help;repo;put-mutability'= {
        }
        &'ecrl;help;image'= {
            cand list 'List a repository''s images (digest and tag pairs)'
            cand describe 'Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO'
            cand delete 'Delete images: a tag removes the tag (an image left without tags goes too); a digest removes the image and its tags'
            cand tag 'Give an existing image another tag'
        }
        &'ecrl;help;image;list'= {
        }
        &'ecrl;help;image;describe'= {
        }
        &'ecrl;help;image;delete'= {
        }
        &'ecrl;help;image;tag'= {
        }
        &'ecrl;help;task'= {
            cand register 'Register a task definition (ECS JSON or YAML) as its family''s next revision'
            cand describe 'Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN'
            cand list 'List task definition ARNs (ACTIVE revisions unless --status says otherwise)'
            cand families 'List task definition families'
            cand deregister 'Deregister a revision: it becomes INACTIVE and can no longer be run'
            cand delete 'Delete INACTIVE revisions'
            cand run 'Run tasks of a definition on the local container runtime (ECS RunTask)'
            cand ps 'List tasks, newest first'
            cand inspect 'Show a task: its state, stop code and reason, containers, exit codes, ports'
            cand logs 'Print what a task''s containers wrote (kept after the task stopped)'
            cand stop 'Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after each one''s stopTimeout; returns once it is STOPPED'
            cand wait 'Wait until a task stops (or runs) and exit with its exit code'
        }
        &'ecrl;help;task;register'= {
        }
        &'ecrl;help;task;describe'= {
        }
        &'ecrl;help;task;list'= {
        }
        &'ecrl;help;task;families'= {
        }
        &'ecrl;help;task;deregister'= {
        }
        &'ecrl;help;task;delete'= {
        }
        &'ecrl;help;task;run'= {
        }
        &'ecrl;help;task;ps'= {
        }
        &'ecrl;help;task;inspect'= {
        }
        &'ecrl;help;task;logs'= {
        }
        &'ecrl;help;task;stop'= {
        }
        &'ecrl;help;task;wait'= {
        }
        &'ecrl;help;service'= {
            cand create 'Create a service (ECS CreateService): its tasks start at once'
            cand update 'Change a service (ECS UpdateService): another revision, count or bounds'
            cand describe 'Show services: counts, deployments and their rollout, the latest events'
            cand list 'List services, with their counts'
            cand delete 'Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0 needs --force'
        }
        &'ecrl;help;service;create'= {
        }
        &'ecrl;help;service;update'= {
        }
        &'ecrl;help;service;describe'= {
        }
        &'ecrl;help;service;list'= {
        }
        &'ecrl;help;service;delete'= {
        }
        &'ecrl;help;logs'= {
        }
        &'ecrl;help;secret'= {
            cand put 'Store a secret''s value (a new version: the one before stays as AWSPREVIOUS)'
            cand get 'Print a secret''s value'
            cand list 'List the secrets'' names and versions (never their values)'
            cand delete 'Delete a secret'
        }
        &'ecrl;help;secret;put'= {
        }
        &'ecrl;help;secret;get'= {
        }
        &'ecrl;help;secret;list'= {
        }
        &'ecrl;help;secret;delete'= {
        }
        &'ecrl;help;cluster'= {
            cand create 'Create a cluster (ECS CreateCluster); creating one that exists shows it'
            cand list 'List clusters (ECS ListClusters), with their task counts'
            cand describe 'Show clusters (ECS DescribeClusters): status, running and pending tasks, tags'
            cand delete 'Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED'
        }
        &'ecrl;help;cluster;create'= {
        }
        &'ecrl;help;cluster;list'= {
        }
        &'ecrl;help;cluster;describe'= {
        }
        &'ecrl;help;cluster;delete'= {
        }
        &'ecrl;help;auth'= {
            cand user 'Registry users and their access keys'
            cand key 'Access keys'
            cand policy 'Identity policies attached to users (IAM JSON or YAML)'
            cand registry-policy 'The registry policy (ECR PutRegistryPolicy): applies to every repository'
            cand simulate 'Decide whether USER may perform ACTION on RESOURCE, and say which statement decided'
        }
        &'ecrl;help;auth;user'= {
            cand create 'Create a user and print its access key id and secret (shown this once)'
            cand list 'List users, their access key ids and policies'
            cand delete 'Delete a user with its keys and policies; its tokens stop working'
        }
        &'ecrl;help;auth;user;create'= {
        }
        &'ecrl;help;auth;user;list'= {
        }
        &'ecrl;help;auth;user;delete'= {
        }
        &'ecrl;help;auth;key'= {
            cand rotate 'Replace a user''s access key: prints the new secret; the old key and its tokens stop working'
            cand create 'Create an access key of the owner (it may do everything): for the AWS CLI and SDKs, and `docker login`; prints its secret this once'
            cand list 'List the owner''s access keys (never their secrets)'
            cand delete 'Delete an owner access key: it stops working at once'
        }
        &'ecrl;help;auth;key;rotate'= {
        }
        &'ecrl;help;auth;key;create'= {
        }
        &'ecrl;help;auth;key;list'= {
        }
        &'ecrl;help;auth;key;delete'= {
        }
        &'ecrl;help;auth;policy'= {
            cand attach 'Attach an identity policy (IAM JSON or YAML) to a user, named after the file unless --name says otherwise; attaching a name again replaces it'
            cand detach 'Detach a user''s policy by name'
            cand list 'List a user''s policies (with their documents in --output json)'
        }
        &'ecrl;help;auth;policy;attach'= {
        }
        &'ecrl;help;auth;policy;detach'= {
        }
        &'ecrl;help;auth;policy;list'= {
        }
        &'ecrl;help;auth;registry-policy'= {
            cand set 'Set the registry policy from a file (- reads stdin)'
            cand get 'Print the registry policy'
            cand delete 'Remove the registry policy'
        }
        &'ecrl;help;auth;registry-policy;set'= {
        }
        &'ecrl;help;auth;registry-policy;get'= {
        }
        &'ecrl;help;auth;registry-policy;delete'= {
        }
        &'ecrl;help;auth;simulate'= {
        }
        &'ecrl;help;get-login-password'= {
        }
        &'ecrl;help;login'= {
        }
        &'ecrl;help;logout'= {
        }
        &'ecrl;help;mirror'= {
            cand sync 'Copy images between this registry and others, or between two others'
            cand jobs 'List the scheduled syncs: last run, result, next run'
            cand job 'Remove a scheduled sync, or run it now'
            cand replication 'Rules that send every pushed image to remote registries, and each image''s status'
            cand cache 'Pull-through cache rules: pulls under a prefix answered from an upstream registry'
        }
        &'ecrl;help;mirror;sync'= {
        }
        &'ecrl;help;mirror;jobs'= {
        }
        &'ecrl;help;mirror;job'= {
            cand rm 'Remove a scheduled sync'
            cand run 'Run a scheduled sync now (and show its progress)'
        }
        &'ecrl;help;mirror;job;rm'= {
        }
        &'ecrl;help;mirror;job;run'= {
        }
        &'ecrl;help;mirror;replication'= {
            cand set 'Set the replication rules (JSON or YAML, ECR''s shape; `-` reads stdin)'
            cand get 'Show the replication rules'
            cand delete 'Remove every replication rule (copies already queued still run)'
            cand status 'Where an image was replicated to, and how that went'
        }
        &'ecrl;help;mirror;replication;set'= {
        }
        &'ecrl;help;mirror;replication;get'= {
        }
        &'ecrl;help;mirror;replication;delete'= {
        }
        &'ecrl;help;mirror;replication;status'= {
        }
        &'ecrl;help;mirror;cache'= {
            cand create 'Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here'
            cand list 'List the rules'
            cand delete 'Delete a rule (what it cached stays)'
            cand validate 'Reach a rule''s upstream and check its credentials'
        }
        &'ecrl;help;mirror;cache;create'= {
        }
        &'ecrl;help;mirror;cache;list'= {
        }
        &'ecrl;help;mirror;cache;delete'= {
        }
        &'ecrl;help;mirror;cache;validate'= {
        }
        &'ecrl;help;tls'= {
            cand ca 'Print the path of ecrld''s CA certificate and how to make docker, skopeo, podman and curl trust the HTTPS registry'
        }
        &'ecrl;help;tls;ca'= {
        }
        &'ecrl;help;gc'= {
        }
        &'ecrl;help;fsck'= {
        }
        &'ecrl;help;events'= {
        }
        &'ecrl;help;storage'= {
            cand migrate 'Move this registry''s blobs into an object store and/or its metadata into PostgreSQL'
        }
        &'ecrl;help;storage;migrate'= {
        }
        &'ecrl;help;completions'= {
        }
        &'ecrl;help;generate-docs'= {
        }
        &'ecrl;help;help'= {
        }
    ]
    $completions[$command]
}
