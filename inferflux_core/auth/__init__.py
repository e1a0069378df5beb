"""Who may call the server: API keys, OIDC tokens, scopes, and the middleware that checks them."""
