"""The broker's command-line subcommands, over the same `Broker` the web app uses."""
