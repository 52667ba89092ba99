"""XSD schemas of every XML document lookup-server emits."""
