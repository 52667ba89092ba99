"""One Blueprint per area of the app; only these modules touch flask.request."""
