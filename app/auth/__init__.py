"""Who is asking: identities (bearer tokens, calling AE titles), permissions and tenants."""
