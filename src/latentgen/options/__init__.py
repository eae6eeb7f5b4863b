"""Option definitions the commands and the config check both read (torch-free)."""
