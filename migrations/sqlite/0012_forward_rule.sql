-- Forwarding rules created through the admin API (app/services/forward_rule_store.py), as
-- migrations/postgres/0012_forward_rule.sql. rule is the JSON of the rule as given
-- (app/services/forward_rules.py's form: an OAuth secret only as the name of an
-- environment variable); created_at is ISO 8601 UTC.
CREATE TABLE forward_rule (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    rule TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
