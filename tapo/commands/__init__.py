"""One module per `tapo` subcommand. Each defines `register(subparsers)`, which adds its parser and sets
`func` to a function that parses nothing further and calls the library."""
