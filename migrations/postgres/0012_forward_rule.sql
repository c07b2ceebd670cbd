-- Forwarding rules created through the admin API (app/services/forward_rule_store.py),
-- per tenant, beside those of the settings file. rule: the rule as given
-- (app/services/forward_rules.py's form), never a secret: an OAuth client's secret is
-- only named by its environment variable.
CREATE TABLE forward_rule (
    tenant text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    rule jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, name)
);
