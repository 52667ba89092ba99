"""ODBC backend: Live Lookup and AJAX options from a SQL database, through pyodbc."""
