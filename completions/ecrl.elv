
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
            cand -o 'Output format for results on stdout'
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
            cand completions 'Print a shell completion script'
            cand generate-docs 'Write completion scripts and man pages into a directory (for packagers and the tests)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;daemon'= {
            cand -o 'Output format for results on stdout'
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
            cand status 'Show whether ecrld runs, where it listens and what it stores (exit 3 when it does not run)'
            cand logs 'Print the log of an ecrld started with ''ecrl daemon start'''
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;daemon;start'= {
            cand --data-dir 'Where blobs and metadata live [default: ~/.local/share/ecrl]'
            cand --registry-addr 'Address the registry listens on (port 0 picks a free port) [default: 127.0.0.1:5000]'
            cand --config 'YAML config file [default: ~/.config/ecrl/config.yaml when it exists]'
            cand --log-format 'Log format on stderr [default: text]'
            cand --wait 'Seconds to wait for the daemon to answer'
            cand -o 'Output format for results on stdout'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;daemon;stop'= {
            cand --wait 'Seconds to wait for the daemon to exit'
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
            cand status 'Show whether ecrld runs, where it listens and what it stores (exit 3 when it does not run)'
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
            cand -o 'Output format for results on stdout'
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
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;repo;create'= {
            cand --tag-mutability 'Whether a pushed tag may later point at another image'
            cand --tag 'A resource tag KEY=VALUE (repeatable)'
            cand -o 'Output format for results on stdout'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;repo;list'= {
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
        &'ecrl;repo;help'= {
            cand create 'Create a repository'
            cand list 'List repositories, optionally those whose name starts with PREFIX'
            cand describe 'Show a repository: URI, creation time, image count, size'
            cand delete 'Delete a repository (one that holds images needs --force)'
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
        &'ecrl;repo;help;help'= {
        }
        &'ecrl;image'= {
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
            cand --output 'Output format for results on stdout'
            cand --socket 'The daemon''s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]'
            cand -q 'Print only results: no progress, no notes'
            cand --quiet 'Print only results: no progress, no notes'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'ecrl;image;describe'= {
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
        &'ecrl;completions'= {
            cand -o 'Output format for results on stdout'
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
            cand -o 'Output format for results on stdout'
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
            cand completions 'Print a shell completion script'
            cand generate-docs 'Write completion scripts and man pages into a directory (for packagers and the tests)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ecrl;help;daemon'= {
            cand start 'Start ecrld in the background and wait until it answers'
            cand stop 'Stop ecrld and wait until it is gone'
            cand status 'Show whether ecrld runs, where it listens and what it stores (exit 3 when it does not run)'
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
        }
        &'ecrl;help;repo;create'= {
        }
        &'ecrl;help;repo;list'= {
        }
        &'ecrl;help;repo;describe'= {
        }
        &'ecrl;help;repo;delete'= {
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
        &'ecrl;help;completions'= {
        }
        &'ecrl;help;generate-docs'= {
        }
        &'ecrl;help;help'= {
        }
    ]
    $completions[$command]
}
