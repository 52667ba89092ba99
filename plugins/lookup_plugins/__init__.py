"""Built-in lookup-server backends, registered through entry points like any plugin."""
