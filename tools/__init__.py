# citynode technician tools: the `citynode` command.
