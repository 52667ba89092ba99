"""LDAP backend: people from Active Directory or OpenLDAP, through ldap3."""
