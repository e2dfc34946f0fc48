# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ecrl_global_optspecs
    string join \n o/output= q/quiet socket= h/help V/version
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

complete -c ecrl -n "__fish_ecrl_needs_command" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_needs_command" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_needs_command" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ecrl -n "__fish_ecrl_needs_command" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "daemon" -d 'Start, stop and inspect the ecrld daemon'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "generate-docs" -d 'Write completion scripts and man pages into a directory (for packagers and the tests)'
complete -c ecrl -n "__fish_ecrl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "start" -d 'Start ecrld in the background and wait until it answers'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "stop" -d 'Stop ecrld and wait until it is gone'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "status" -d 'Show whether ecrld runs, where it listens and what it stores (exit 3 when it does not run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "logs" -d 'Print the log of an ecrld started with \'ecrl daemon start\''
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status logs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l data-dir -d 'Where blobs and metadata live [default: ~/.local/share/ecrl]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l registry-addr -d 'Address the registry listens on (port 0 picks a free port) [default: 127.0.0.1:5000]' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l config -d 'YAML config file [default: ~/.config/ecrl/config.yaml when it exists]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l log-format -d 'Log format on stderr [default: text]' -r -f -a "text\t''
json\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l wait -d 'Seconds to wait for the daemon to answer' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l wait -d 'Seconds to wait for the daemon to exit' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s n -l tail -d 'Print only the last N lines' -r
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing new lines as they are written'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start ecrld in the background and wait until it answers'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop ecrld and wait until it is gone'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether ecrld runs, where it listens and what it stores (exit 3 when it does not run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Print the log of an ecrld started with \'ecrl daemon start\''
complete -c ecrl -n "__fish_ecrl_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s o -l output -d 'Output format for results on stdout' -r -f -a "table\t''
json\t''
yaml\t''"
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -l socket -d 'The daemon\'s control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]' -r -F
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s q -l quiet -d 'Print only results: no progress, no notes'
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s h -l help -d 'Print help'
complete -c ecrl -n "__fish_ecrl_using_subcommand generate-docs" -s V -l version -d 'Print version'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon completions generate-docs help" -f -a "daemon" -d 'Start, stop and inspect the ecrld daemon'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon completions generate-docs help" -f -a "completions" -d 'Print a shell completion script'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon completions generate-docs help" -f -a "generate-docs" -d 'Write completion scripts and man pages into a directory (for packagers and the tests)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and not __fish_seen_subcommand_from daemon completions generate-docs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "start" -d 'Start ecrld in the background and wait until it answers'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "stop" -d 'Stop ecrld and wait until it is gone'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "status" -d 'Show whether ecrld runs, where it listens and what it stores (exit 3 when it does not run)'
complete -c ecrl -n "__fish_ecrl_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "logs" -d 'Print the log of an ecrld started with \'ecrl daemon start\''
